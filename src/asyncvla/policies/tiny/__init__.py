"""The built-in `tiny` VLA (discrete action tokens) and `tiny-gaussian` (continuous head)."""
