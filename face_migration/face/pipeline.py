"""From reference photos to the inputs of PuLID's IDFormer, as the official pipeline (pulid-spec section 5):

long edge <= 1024 (Lanczos) -> SCRFD at 640 -> chosen face -> ArcFace on the 112 crop (raw embedding)
-> 512 FFHQ crop from RetinaFace landmarks (or SCRFD's, in fast mode) -> BiSeNet parsing -> background
white, face grey -> bicubic 336 -> EVA02-CLIP: L2-normalised head + five hidden states.

One deliberate fix: both crops come from the face SCRFD chose (the official code may take the largest
face for ArcFace and the centre face for EVA). RetinaFace's landmarks align the EVA crop only when its box
is that same face (IoU >= SAME_FACE_MIN_IOU); otherwise SCRFD's keypoints do, and the info says so.
When SCRFD finds no face and RetinaFace is loaded, the official fallback runs ArcFace on the crop aligned
on RetinaFace's centre face, resized to 112.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import FaceMigrationError, IncompatibleModelError, InvalidInputError, NoFaceError
from ..pulid.identity import PulidIdentity, identity_from_embeddings
from ..pulid.model import PulidFlux
from .align import arcface_crop, ffhq_crop
from .bisenet import BiSeNet, background_mask, parse_labels
from .detection import ScrfdDetector
from .eva_clip import EvaVisionTower, preprocess
from .recognition import ArcFaceRecognizer, cosine_similarity
from .resample import limit_long_edge, resize_linear
from .retinaface import RetinaFace, choose_center_face, choose_nearest_face, detect_faces
from .selection import box_iou, choose_face

MAX_EDGE = 1024
# A RetinaFace box is the SCRFD-chosen face when they overlap this much. Both detectors' own NMS treat
# boxes overlapping by more than IoU 0.4 as one face; two boxes of one face from two detectors overlap
# far more (the tiny test detectors: 0.64), two people's faces far less.
SAME_FACE_MIN_IOU = 0.4
ARCFACE_DIM = 512  # the raw ArcFace embedding leads the IDFormer input vector
COMBINE_MODES = ("mean", "concat", "per image")  # per image: identity i for image i of the sampled batch
# EVA runs on at most this many prepared photos at once. Batching shares the weight reads across photos
# (issue 13 measured about 4 % less CPU time per photo); the bound keeps peak memory in check (each photo adds 5 hidden states of
# 577 x 1024 plus the tower's activations) and lets a cancel between chunks stop a long encode early.
EVA_BATCH = 4


@dataclass
class FaceModels:
    detector: ScrfdDetector
    recognizer: ArcFaceRecognizer
    eva: EvaVisionTower
    parser: BiSeNet
    landmarker: RetinaFace | None  # None: fast mode, align from SCRFD's keypoints
    device: torch.device = torch.device("cpu")
    eva_dtype: torch.dtype = torch.float32


@dataclass
class ReferenceEmbedding:
    id_vector: torch.Tensor  # [1280]: raw ArcFace 512 + normalised EVA head 768
    vit_hidden: list[torch.Tensor]  # 5 x [577, 1024]
    preview: np.ndarray  # [512, 1024, 3] uint8: the photo with the chosen face, and what EVA sees
    info: str


@dataclass
class PreparedReference:
    """A photo made ready for EVA: all of encode_reference but the EVA forward."""
    arcface: np.ndarray  # [512] raw ArcFace embedding
    eva_pixels: torch.Tensor  # [1, 3, image_size, image_size] fp32, normalised, on the models' device
    preview: np.ndarray
    info: str


def eva_input(parser: BiSeNet, crop512: np.ndarray, device) -> torch.Tensor:
    """The aligned crop with background white and the face in grey, [1, 3, 512, 512] in [0, 1]."""
    x = torch.from_numpy(crop512).to(device).permute(2, 0, 1)[None].float() / 255.0
    background = background_mask(parse_labels(parser, x))[:, None]
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).repeat(1, 3, 1, 1)
    return torch.where(background, torch.ones_like(grey), grey)


def _draw_box(canvas: np.ndarray, box, colour, width: int = 3) -> None:
    h, w = canvas.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
    x1, x2 = np.clip([x1, x2], 0, w - 1)
    y1, y2 = np.clip([y1, y2], 0, h - 1)
    canvas[y1:y1 + width, x1:x2 + 1] = colour
    canvas[max(y2 - width + 1, 0):y2 + 1, x1:x2 + 1] = colour
    canvas[y1:y2 + 1, x1:x1 + width] = colour
    canvas[y1:y2 + 1, max(x2 - width + 1, 0):x2 + 1] = colour


def make_preview(image: np.ndarray, boxes: np.ndarray, chosen: int | None, eva_view: torch.Tensor) -> np.ndarray:
    """Left: the photo fitted into 512x512 with every face boxed (chosen one green); right: EVA's input."""
    scale = 512 / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    photo = resize_linear(image, size)
    left = np.zeros((512, 512, 3), np.uint8)
    left[:photo.shape[0], :photo.shape[1]] = photo
    for i, box in enumerate(boxes):
        _draw_box(left, np.asarray(box[:4]) * scale, (40, 220, 60) if i == chosen else (220, 60, 40),
                  3 if i == chosen else 1)
    right = (eva_view[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
    return np.concatenate([left, right], axis=1)


def prepare_reference(models: FaceModels, image: np.ndarray, order: str = "largest-first", index: int = 0,
                      label: str = "the reference image") -> PreparedReference:
    """One RGB uint8 photo -> ArcFace embedding, EVA input, preview and info. NoFaceError when no face."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
            or 0 in image.shape[:2]:
        raise InvalidInputError(
            f"{label}: expected an RGB uint8 photo [height, width, 3] with pixels, got "
            f"{getattr(image, 'dtype', type(image).__name__)} of shape {list(getattr(image, 'shape', []))}; "
            "convert it with face_migration.face.photos.to_rgb_uint8 first.")
    image = limit_long_edge(image, MAX_EDGE)
    boxes, keypoints = models.detector.detect(image)
    notes = [f"{label}: {len(boxes)} face(s) found by SCRFD"
             + (f" (scores {', '.join(f'{s:.2f}' for s in boxes[:, 4])})" if len(boxes) else "")]
    chosen = choose_face(boxes, order, index, label) if len(boxes) else None
    if models.landmarker is not None:
        dets = detect_faces(models.landmarker, image)
        if chosen is None:
            pick = choose_center_face(dets)
        else:
            pick = choose_nearest_face(dets, boxes[chosen, :4], min_iou=SAME_FACE_MIN_IOU)
        if pick is not None:
            landmarks, how = dets.landmarks[pick], "RetinaFace landmarks (official)"
        elif chosen is not None:
            best = box_iou(boxes[chosen, :4], dets.boxes).max(initial=0.0)
            landmarks, how = keypoints[chosen], ("SCRFD keypoints (RetinaFace found no face overlapping the chosen "
                                                 f"one: best IoU {best:.2f} < {SAME_FACE_MIN_IOU})" if len(dets) else
                                                 "SCRFD keypoints (RetinaFace found no face)")
        else:
            raise NoFaceError(f"No face was found in {label} (SCRFD and RetinaFace). Use a photo where "
                              "the face is clearly visible, frontal and at least about 64 pixels wide.")
    elif chosen is not None:
        landmarks, how = keypoints[chosen], "SCRFD keypoints (fast mode)"
    else:
        raise NoFaceError(f"No face was found in {label}. Use a photo where the face is clearly visible, "
                          "frontal and at least about 64 pixels wide (or load RetinaFace for a second try).")
    crop512, _ = ffhq_crop(image, landmarks)
    if chosen is not None:
        arcface = models.recognizer.embed(arcface_crop(image, keypoints[chosen])[0][None])[0]
        notes.append(f"used face #{index} ({order}), score {boxes[chosen, 4]:.2f}; aligned with {how}")
    else:  # official fallback: ArcFace on the aligned 512 crop
        arcface = models.recognizer.embed(resize_linear(crop512, (112, 112))[None])[0]
        notes.append(f"SCRFD found no face: ArcFace ran on the crop aligned with {how} (official fallback)")
    eva_view = eva_input(models.parser, crop512, models.device)
    return PreparedReference(np.asarray(arcface, np.float32), preprocess(eva_view, models.eva.cfg.image_size),
                             make_preview(image, boxes, chosen, eva_view), "; ".join(notes))


def embed_references(models: FaceModels, prepared: list[PreparedReference]) -> list[ReferenceEmbedding]:
    """One EVA forward over the prepared photos (a batch) -> the IDFormer inputs of each."""
    pixels = torch.cat([p.eva_pixels for p in prepared]).to(models.device, models.eva_dtype)
    head, hidden = models.eva(pixels)
    head = head.float()
    head = (head / head.norm(dim=-1, keepdim=True)).cpu()
    return [ReferenceEmbedding(torch.cat([torch.from_numpy(p.arcface), head[i]]), [h[i].float().cpu() for h in hidden],
                               p.preview, p.info) for i, p in enumerate(prepared)]


def encode_reference(models: FaceModels, image: np.ndarray, order: str = "largest-first", index: int = 0,
                     label: str = "the reference image") -> ReferenceEmbedding:
    """One RGB uint8 photo -> the IDFormer inputs, a preview and a line of info. NoFaceError when no face."""
    return embed_references(models, [prepare_reference(models, image, order, index, label)])[0]


def check_encoders_fit(eva: EvaVisionTower, pulid: PulidFlux) -> None:
    """IncompatibleModelError unless the EVA tower's widths are those the PuLID IDFormer was trained on."""
    e, p = eva.cfg, pulid.cfg
    if e.width != p.vit_dim or ARCFACE_DIM + e.embed_dim != p.id_input_dim:
        raise IncompatibleModelError(
            f"The EVA-CLIP model (hidden width {e.width}, head {e.embed_dim}) does not fit the PuLID model, which "
            f"expects hidden width {p.vit_dim} and head {p.id_input_dim - ARCFACE_DIM}. Load "
            f"EVA02_CLIP_L_336_psz14_s6B (EVA02-CLIP-L-14-336) in the EVA-CLIP loader, and a PuLID-FLUX file "
            f"(pulid_flux_v0.9.1.safetensors) in the PuLID loader.")


def encode_identity(models: FaceModels, pulid: PulidFlux, fingerprint: str, images: list[np.ndarray],
                    order: str = "largest-first", index: int = 0, combine: str = "mean",
                    skip_faceless: bool = False, encoder_dtype: torch.dtype | None = None,
                    on_progress: Callable[[int, int], None] | None = None,
                    check_cancel: Callable[[], None] | None = None) -> tuple[PulidIdentity, list[np.ndarray], str]:
    """Several reference photos -> one PULID identity (ID tokens averaged, or concatenated), previews, info.

    Every photo is prepared first (detection, alignment, ArcFace, parsing); EVA then runs on chunks of at most
    EVA_BATCH of them. check_cancel is called before each photo and each chunk."""
    if combine not in COMBINE_MODES:
        raise FaceMigrationError(f"Unknown combine mode '{combine}'; choose one of {', '.join(COMBINE_MODES)}.")
    if not images:
        raise InvalidInputError("Encode Face got no reference image (an empty batch). Connect at least one photo "
                                "of the person (e.g. Load Image).")
    check_encoders_fit(models.eva, pulid)
    total = 2 * len(images)  # progress: each photo counts once prepared and once through EVA
    prepared, previews, notes = [], [], []
    for i, image in enumerate(images):
        if check_cancel is not None:
            check_cancel()
        label = f"reference image {i}" if len(images) > 1 else "the reference image"
        try:
            ref = prepare_reference(models, image, order, index, label)
        except NoFaceError:
            if not skip_faceless:
                raise
            notes.append(f"{label}: skipped, no face")
            previews.append(make_preview(limit_long_edge(image, MAX_EDGE), np.zeros((0, 5)), None,
                                         torch.zeros(1, 3, 512, 512)))
        else:
            prepared.append(ref)
            previews.append(ref.preview)
            notes.append(ref.info)
        if on_progress is not None:
            on_progress(i + 1, total)
    if not prepared:
        raise NoFaceError("No face was found in any reference image. Use photos where the face is "
                          "clearly visible, frontal and at least about 64 pixels wide.")
    skipped_done = total - len(prepared)  # a skipped photo needs no EVA pass
    refs = []
    for start in range(0, len(prepared), EVA_BATCH):
        if check_cancel is not None:
            check_cancel()
        refs += embed_references(models, prepared[start:start + EVA_BATCH])
        if on_progress is not None:
            on_progress(skipped_done + len(refs), total)
    id_vector = torch.stack([r.id_vector for r in refs])
    hidden = [torch.stack([r.vit_hidden[s] for r in refs]) for s in range(len(refs[0].vit_hidden))]
    identity = identity_from_embeddings(pulid, fingerprint, id_vector, hidden, dtype=encoder_dtype)
    n, tokens, width = identity.cond.shape
    if combine == "mean":
        cond, uncond = identity.cond.mean(0, keepdim=True), identity.uncond[:1]
    elif combine == "concat":
        cond, uncond = identity.cond.reshape(1, n * tokens, width), identity.uncond.reshape(1, n * tokens, width)
    elif n != len(images):  # a skipped photo would hand every later identity to the wrong image
        raise InvalidInputError(f"Encode Face with combine 'per image' needs a face in every reference photo (one "
                                f"identity per image of the batch), but {len(images) - n} of {len(images)} had none. "
                                f"Remove those photos or use combine 'mean'.")
    else:
        cond, uncond = identity.cond, identity.uncond
    info = {"references": len(images), "faces_used": n, "combine": combine}
    summary = "\n".join(notes) + f"\nidentity: {n} reference(s), {combine}, {cond.shape[1]} ID tokens"
    return PulidIdentity(cond, uncond, fingerprint, info), previews, summary


def largest_face_embedding(detector: ScrfdDetector, recognizer: ArcFaceRecognizer, image: np.ndarray):
    """Raw ArcFace embedding of the largest face, or None when there is no face."""
    image = limit_long_edge(image, MAX_EDGE)
    boxes, keypoints = detector.detect(image)
    if not len(boxes):
        return None
    chosen = choose_face(boxes, "largest-first", 0)
    return recognizer.embed(arcface_crop(image, keypoints[chosen])[0][None])[0]


def face_similarities(detector: ScrfdDetector, recognizer: ArcFaceRecognizer, reference: np.ndarray,
                      images: list[np.ndarray]) -> tuple[list[float], str]:
    """ArcFace cosine similarity between the reference's largest face and each image's largest face
    (0.0 where an image has no face). Same person is typically above 0.4 with antelopev2."""
    ref = largest_face_embedding(detector, recognizer, reference)
    if ref is None:
        raise NoFaceError("Face Similarity: no face was found in the reference image. Use a photo where the face "
                          "is clearly visible, frontal and at least about 64 pixels wide.")
    scores, lines = [], []
    for i, image in enumerate(images):
        emb = largest_face_embedding(detector, recognizer, image)
        score = 0.0 if emb is None else float(cosine_similarity(ref, emb[None])[0])
        scores.append(score)
        lines.append(f"image {i}: " + ("no face found" if emb is None else f"similarity {score:.3f}"))
    return scores, "\n".join(lines)
