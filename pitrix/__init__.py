"""pitrix: VM-based application clusters on clouds, configured for their whole life."""

import warnings

__version__ = "0.1.0"

# asyncssh names cryptography's DSA types in its annotations, and cryptography deprecates DSA:
# importing asyncssh printed five warnings from every daemon. pitrix never makes or accepts a DSA
# key (ed25519 and ECDSA only), so these, and only these, are silenced where they are raised.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
