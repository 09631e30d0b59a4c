"""Face pipeline: from reference photos to the embeddings PuLID needs (pulid-spec section 5).

pipeline (the whole path, previews, face similarity) over: onnx_runtime (sessions, execution providers),
detection (SCRFD), recognition (ArcFace), align (templates, similarity transforms, crops), resample
(OpenCV-exact resizes and warp in numpy), selection (which face), retinaface and bisenet (facexlib's
networks, read by facexlib_weights), eva_clip (EVA02-CLIP vision tower) and convert_eva (its command).
Modules are imported directly; nothing heavy is imported here.
"""
