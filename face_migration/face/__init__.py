"""Face pipeline: from reference photos to the embeddings PuLID needs (pulid-spec section 5).

onnx_runtime (sessions, execution providers), detection (SCRFD), recognition (ArcFace, cosine
similarity), align (5-point templates, similarity transforms, aligned crops), resample (OpenCV-exact
resizes and affine warp in numpy), selection (which face), eva_clip and facexlib_nets (torch networks).
Modules are imported directly; nothing heavy is imported here.
"""
