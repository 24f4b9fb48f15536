"""`flow`: a π0-style flow-matching VLA (SigLIP + Llama prefix, an action expert that attends to it)."""
