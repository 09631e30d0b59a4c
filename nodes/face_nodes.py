"""Face loaders, Encode Face (PuLID) and Face Similarity: thin adapters over face_migration.face."""
from __future__ import annotations

import os

import comfy.model_management
import comfy.ops
import comfy.utils
import numpy as np
import torch
from comfy_api.v0_0_2 import io, ui

from ..face_migration.catalog import BY_KEY
from ..face_migration.errors import ModelFileError
from ..face_migration.face.bisenet import load_bisenet
from ..face_migration.face.detection import load_scrfd
from ..face_migration.face.eva_clip import load_eva_clip
from ..face_migration.face.onnx_runtime import PROVIDER_CHOICES
from ..face_migration.face.photos import photos_from_batch
from ..face_migration.face.pipeline import COMBINE_MODES, FaceModels, encode_identity, face_similarities
from ..face_migration.face.recognition import load_arcface
from ..face_migration.face.retinaface import load_retinaface
from ..face_migration.face.selection import FACE_ORDERS
from .common import (CATEGORY, REFRESH_HINT, PulidId, PulidModel, check_file_choice, find_catalog_file, folder_hint,
                     load_cached, managed, model_choices, resolve_model_file, schema_extras, subfolder_choices)

FaceAnalysis = io.Custom("FACE_MIGRATION_FACE_ANALYSIS")
EvaClip = io.Custom("FACE_MIGRATION_EVA_CLIP")
FaceParsing = io.Custom("FACE_MIGRATION_FACE_PARSING")
FAST_ALIGNMENT = "none (fast: SCRFD landmarks)"
SCRFD, GLINTR100 = BY_KEY["scrfd"], BY_KEY["glintr100"]


class FaceAnalysisModels:
    """antelopev2's detector and recognizer on onnxruntime (only these two files are loaded)."""

    def __init__(self, detector_path: str, recognizer_path: str, providers: str):
        # "auto" follows ComfyUI's device: no GPU provider when ComfyUI computes on the CPU (--cpu or no GPU).
        gpu_present = comfy.model_management.get_torch_device().type != "cpu"
        self.detector = load_scrfd(detector_path, providers, gpu_present)
        self.recognizer = load_arcface(recognizer_path, providers, gpu_present)

    def __repr__(self):
        return f"antelopev2 ({os.path.dirname(self.detector.path)})"


class TorchModels:
    """Torch networks with the ModelPatcher that puts them on the compute device when used."""

    def __init__(self, name: str, module: torch.nn.Module):
        self.name, self.module, self.patcher = name, module, managed(module)

    def __repr__(self):
        return self.name


class FaceAnalysisLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_FaceAnalysisLoader",
            display_name="Load Face Analysis (antelopev2)",
            **schema_extras(search_aliases=["InsightFace", "antelopev2", "face detector",
                                            "Load InsightFace (PuLID Flux)", "PulidFluxInsightFaceLoader"]),
            category=CATEGORY,
            description="Loads scrfd_10g_bnkps.onnx (face detector) and glintr100.onnx (ArcFace) from "
                        "models/insightface/models/antelopev2. Non-commercial licence.",
            inputs=[io.Combo.Input("provider", options=list(PROVIDER_CHOICES), default="auto",
                                   tooltip="onnxruntime execution provider. auto = the GPU one when ComfyUI runs "
                                           "on a GPU (a warning says how to install it if missing), else CPU."),
                    # Files as widgets so the frontends' Missing Models check sees them; optional, so prompts
                    # written before these inputs existed still load the catalogue's files.
                    io.Combo.Input("detector_file", options=subfolder_choices(SCRFD, ".onnx"),
                                   default=SCRFD.filename, optional=True,
                                   tooltip=f"SCRFD face detector: {SCRFD.filename} from antelopev2, in "
                                           f"{SCRFD.display_folder}."),
                    io.Combo.Input("recognizer_file", options=subfolder_choices(GLINTR100, ".onnx"),
                                   default=GLINTR100.filename, optional=True,
                                   tooltip=f"ArcFace recognizer: {GLINTR100.filename} from antelopev2, in "
                                           f"{GLINTR100.display_folder}.")],
            outputs=[FaceAnalysis.Output(display_name="face_analysis",
                                         tooltip="Face detector + recognizer, for Encode Face and Face Similarity.")],
        )

    @classmethod
    def validate_inputs(cls, detector_file=SCRFD.filename, recognizer_file=GLINTR100.filename):
        for model, filename in ((SCRFD, detector_file), (GLINTR100, recognizer_file)):
            try:
                find_catalog_file(model, filename)
            except ModelFileError as missing:
                return f"{missing} {REFRESH_HINT}"
        return True

    @classmethod
    def execute(cls, provider, detector_file=SCRFD.filename, recognizer_file=GLINTR100.filename):
        paths = (find_catalog_file(SCRFD, detector_file), find_catalog_file(GLINTR100, recognizer_file))
        return io.NodeOutput(load_cached("face_analysis", paths, (provider,),
                                         lambda: FaceAnalysisModels(*paths, provider)))


class EvaClipLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_EvaClipLoader",
            display_name="Load EVA02-CLIP (PuLID)",
            **schema_extras(search_aliases=["EVA-CLIP", "PuLID", "Load Eva Clip (PuLID Flux)",
                                            "PulidFluxEvaClipLoader"]),
            category=CATEGORY,
            description="Loads the EVA02-CLIP-L-14-336 vision tower from models/clip, without running pickle "
                        "code. `python -m face_migration convert-eva` makes a smaller .safetensors of it.",
            inputs=[io.Combo.Input("eva_file", options=model_choices("clip", BY_KEY["eva02_clip_l_336"],
                                                                     (".pt", ".pth", ".safetensors")),
                                   tooltip="EVA02_CLIP_L_336_psz14_s6B.pt (huggingface.co/QuanSun/EVA-CLIP) or "
                                           "its visual-only .safetensors conversion, in models/clip.")],
            outputs=[EvaClip.Output(display_name="eva_clip", tooltip="The EVA02-CLIP vision tower.")],
        )

    @classmethod
    def validate_inputs(cls, eva_file):
        return check_file_choice("clip", eva_file, BY_KEY["eva02_clip_l_336"])

    @classmethod
    def execute(cls, eva_file):
        path = resolve_model_file("clip", eva_file, BY_KEY["eva02_clip_l_336"])
        return io.NodeOutput(load_cached("eva_clip", (path,), (), lambda: TorchModels(
            f"EVA02-CLIP {eva_file}", load_eva_clip(path, comfy.ops.manual_cast, folder_hint("clip")))))


class FaceParsingLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_FaceParsingLoader",
            display_name="Load Face Parsing (facexlib)",
            **schema_extras(search_aliases=["facexlib", "BiSeNet", "RetinaFace", "face parsing"]),
            category=CATEGORY,
            description="Loads facexlib's BiSeNet (parsing) and, optionally, RetinaFace-ResNet50 (official "
                        "alignment landmarks) from models/facexlib. facexlib itself is not needed.",
            inputs=[
                io.Combo.Input("parsing_file", options=model_choices("facexlib", BY_KEY["bisenet"], (".pth",)),
                               tooltip="parsing_bisenet.pth from facexlib's v0.2.0 release, in models/facexlib."),
                io.Combo.Input("landmark_file",
                               options=model_choices("facexlib", BY_KEY["retinaface_resnet50"], (".pth",))
                               + [FAST_ALIGNMENT],
                               tooltip="detection_Resnet50_Final.pth (facexlib v0.1.0) aligns the face crop "
                                       "exactly as the official code. 'none' aligns from the SCRFD landmarks: "
                                       "faster, no extra file, a slightly different crop."),
            ],
            outputs=[FaceParsing.Output(display_name="face_parsing",
                                        tooltip="Face parsing (and alignment) networks for Encode Face.")],
        )

    @classmethod
    def validate_inputs(cls, parsing_file, landmark_file):
        parsing = check_file_choice("facexlib", parsing_file, BY_KEY["bisenet"])
        if parsing is not True or landmark_file == FAST_ALIGNMENT:
            return parsing
        return check_file_choice("facexlib", landmark_file, BY_KEY["retinaface_resnet50"])

    @classmethod
    def execute(cls, parsing_file, landmark_file):
        parsing_path = resolve_model_file("facexlib", parsing_file, BY_KEY["bisenet"])
        landmark_path = None if landmark_file == FAST_ALIGNMENT else \
            resolve_model_file("facexlib", landmark_file, BY_KEY["retinaface_resnet50"])

        def load():
            nets = torch.nn.ModuleDict({"parser": load_bisenet(parsing_path, comfy.ops.disable_weight_init)})
            if landmark_path is not None:
                nets["landmarker"] = load_retinaface(landmark_path, comfy.ops.disable_weight_init)
            return TorchModels(f"facexlib {parsing_file} + {landmark_file}", nets)

        paths = (parsing_path,) + ((landmark_path,) if landmark_path else ())
        return io.NodeOutput(load_cached("face_parsing", paths, (landmark_file,), load))


def compute_dtype(device: torch.device) -> torch.dtype:
    """The official networks run in bf16 on the GPU; fp16 where bf16 is slow; fp32 on the CPU."""
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float16


def release(patchers: list, device: torch.device) -> None:
    """Unload these models from the compute device now: the identity is all sampling needs, and ComfyUI would
    otherwise keep them there until a later load runs short of memory. Their CPU weights stay for the next
    encode."""
    keep = [m for m in comfy.model_management.current_loaded_models if not any(m.model is p for p in patchers)]
    comfy.model_management.free_memory(1e30, device, keep_loaded=keep)


class EncodeFace(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_EncodeFace",
            display_name="Encode Face (PuLID)",
            category=CATEGORY,
            description="Reference photo(s) -> PuLID identity. Runs once; changing Apply's settings reuses it.",
            inputs=[
                io.Image.Input("image", tooltip="One or more reference photos of the same person (a batch)."),
                FaceAnalysis.Input("face_analysis", tooltip="From Load Face Analysis (antelopev2)."),
                EvaClip.Input("eva_clip", tooltip="From Load EVA02-CLIP (PuLID)."),
                FaceParsing.Input("face_parsing", tooltip="From Load Face Parsing (facexlib)."),
                PulidModel.Input("pulid_model", tooltip="From Load PuLID-FLUX Model; use the same one in Apply."),
                io.Combo.Input("face_order", options=list(FACE_ORDERS), default="largest-first",
                               tooltip="How faces in a photo are counted for face_index."),
                io.Int.Input("face_index", default=0, min=0, max=63,
                             tooltip="Which face to use in each photo, in face_order (0 = the first: the largest "
                                     "face by default)."),
                io.Combo.Input("combine", options=list(COMBINE_MODES), default="mean",
                               tooltip="Several references: mean of their ID tokens (one identity, default), "
                                       "concat (all tokens side by side: more detail, slower attention) or per "
                                       "image (photo i is the identity of image i of the sampled batch; the batch "
                                       "must have as many images as photos)."),
                io.Boolean.Input("skip_faceless", default=False,
                                 tooltip="On: photos without a face are skipped (as long as one has a face). "
                                         "Off: such a photo stops the run with an error naming it."),
                io.Boolean.Input("show_preview", default=True, optional=True,
                                 tooltip="On: the preview is also shown on this node (a file in ComfyUI's temp "
                                         "folder). Off: nothing of the photos is written to disk; the self-hosted "
                                         "API turns it off for its clients' photos."),
            ],
            outputs=[
                PulidId.Output(display_name="pulid_id", tooltip="The face identity, for Apply PuLID-FLUX."),
                io.Image.Output(display_name="preview",
                                tooltip="Per photo: the chosen face boxed in green (others in red) and the "
                                        "aligned, parsed grey crop EVA-CLIP sees."),
                io.String.Output(display_name="info", tooltip="Faces found, which one was used, scores."),
            ],
            # 0.33 shows a cached node's preview again only for nodes marked so (0.3.64 always did).
            **schema_extras(search_aliases=["PuLID", "face id", "face embedding", "reference face", "identity",
                                            "PulidFluxFaceDetector", "Pulid Flux Face Detector"],
                            has_intermediate_output=True),
        )

    @classmethod
    def execute(cls, image, face_analysis, eva_clip, face_parsing, pulid_model, face_order, face_index,
                combine, skip_faceless, show_preview=True):
        device = comfy.model_management.get_torch_device()
        dtype = compute_dtype(device)
        patchers = [eva_clip.patcher, face_parsing.patcher, pulid_model.encoder_patcher]
        comfy.model_management.load_models_gpu(patchers)
        nets = face_parsing.module
        models = FaceModels(face_analysis.detector, face_analysis.recognizer, eva_clip.module, nets["parser"],
                            nets["landmarker"] if "landmarker" in nets else None, device, dtype)
        photos = photos_from_batch(image, "Encode Face", "image")
        progress = comfy.utils.ProgressBar(len(photos))
        try:
            identity, previews, info = encode_identity(
                models, pulid_model.model, pulid_model.fingerprint, photos, face_order, face_index, combine,
                skip_faceless, encoder_dtype=dtype,
                on_progress=lambda done, total: progress.update_absolute(done, total),
                check_cancel=comfy.model_management.throw_exception_if_processing_interrupted)
        finally:
            release(patchers, device)
        preview = torch.from_numpy(np.stack(previews)).float() / 255.0
        shown = ui.PreviewText(info).as_dict()  # on the node through web/node_results.js
        if show_preview:
            shown.update(ui.PreviewImage(preview, cls=cls).as_dict())
        return io.NodeOutput(identity, preview, info, ui=shown)


class FaceSimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_FaceSimilarity",
            display_name="Face Similarity (ArcFace)",
            **schema_extras(search_aliases=["ArcFace", "face id", "identity score", "face match"]),
            category=CATEGORY,
            description="ArcFace cosine similarity between the reference face and the largest face of each "
                        "image: does the identity show in the output, and how strongly.",
            is_output_node=True,
            inputs=[
                FaceAnalysis.Input("face_analysis", tooltip="From Load Face Analysis (antelopev2)."),
                io.Image.Input("reference", tooltip="The reference photo (its first image is used)."),
                io.Image.Input("images", tooltip="Generated images to score."),
            ],
            outputs=[
                io.Float.Output(display_name="similarity", is_output_list=True,
                                tooltip="One value per image in [-1, 1]; 0 where no face was found. The same "
                                        "person usually scores above about 0.4."),
                io.String.Output(display_name="report", tooltip="The scores as readable text."),
            ],
        )

    @classmethod
    def execute(cls, face_analysis, reference, images):
        scores, report = face_similarities(face_analysis.detector, face_analysis.recognizer,
                                           photos_from_batch(reference[:1], "Face Similarity", "reference")[0],
                                           photos_from_batch(images, "Face Similarity", "images"))
        return io.NodeOutput(scores, report, ui=ui.PreviewText(report))


NODES = [FaceAnalysisLoader, EvaClipLoader, FaceParsingLoader, EncodeFace, FaceSimilarity]
