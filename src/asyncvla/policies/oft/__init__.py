"""`oft`: an OpenVLA-OFT-style VLA (SigLIP + projector + Llama decoder, parallel decoding of action tokens)."""
