"""PuLID-FLUX: IDFormer, cross-attention modules, weight loading and the identity value."""
