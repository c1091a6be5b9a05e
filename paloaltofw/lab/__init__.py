"""The lab: an emulated PAN-OS firewall and Sectigo Certificate Manager over real HTTPS.

See `lab.Lab` for the whole lab, `panos` and `scm` for the two emulated systems, and the
README's "The lab" section for how to use it. The agent never imports this package; only the
`lab` and `demo` commands do.
"""
