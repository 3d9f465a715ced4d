"""Intrinsic dimension: random-subspace training (DID, SAID) with the Fastfood transform, and d_90 search."""
