"""Save Identity / Load Identity: a PULID_ID to and from models/pulid_identities/*.safetensors, so a face is
encoded once and applied later without the face models (see face_migration/pulid/identity_file.py)."""
from __future__ import annotations

import logging
import os

import folder_paths
import numpy as np
import torch
from comfy_api.v0_0_2 import io, ui

from ..face_migration.errors import IdentityFileError
from ..face_migration.face.photos import to_rgb_uint8
from ..face_migration.pulid.identity_file import (EXTENSION, FOLDER, describe, face_thumbnail, identity_file_name,
                                                  load_identity, matches, save_identity)
from .common import CATEGORY, LOG_PREFIX, PulidId, PulidModel, folder_hint, schema_extras


def identity_files() -> list[str]:
    return [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith(EXTENSION)]


def missing_identity_message(name: str) -> str:
    return (f"Face identity file '{name}' is not in {folder_hint(FOLDER)}. Run a workflow with Save Identity "
            f"first (it writes there), or copy a shared identity .safetensors file into that folder and press R "
            f"in the browser to refresh the list.")


class SaveIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_SaveIdentity",
            display_name="Save Identity (PuLID)",
            **schema_extras(search_aliases=["PuLID", "face id", "save face", "identity file"]),
            category=CATEGORY,
            description="Saves a face identity to models/pulid_identities/<name>.safetensors: the ID tokens, the "
                        "PuLID weights they were made with and a small thumbnail of the aligned face crop (optional); "
                        "never the photos. Load Identity applies it later without any face model.",
            is_output_node=True,
            inputs=[
                PulidId.Input("pulid_id", tooltip="The identity from Encode Face (PuLID)."),
                io.String.Input("name", default="my_face",
                                tooltip="File name in models/pulid_identities (.safetensors is added)."),
                io.Boolean.Input("thumbnail", default=True,
                                 tooltip="Keep a 128 px thumbnail of the aligned, grey face crop the encoder saw "
                                         "(from 'preview'), never the photo. Off: the file holds no image at all."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace a file of the same name holding another identity. Off: such a "
                                         "file stops the run (saving the same identity again is always fine)."),
                io.Image.Input("preview", optional=True,
                               tooltip="Encode Face's preview, for the thumbnail (only its aligned-crop half is "
                                       "kept)."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, pulid_id, name, thumbnail, overwrite, preview=None):
        filename = identity_file_name(name)
        path = os.path.join(folder_paths.get_folder_paths(FOLDER)[0], filename)
        thumb = face_thumbnail(to_rgb_uint8(preview[0].cpu().numpy())) if thumbnail and preview is not None else None
        if os.path.exists(path) and not matches(load_identity(path), pulid_id, thumb):
            if not overwrite:
                raise IdentityFileError(f"{path} already holds another identity. Choose another name, or turn on "
                                        f"'overwrite' to replace it.")
            logging.info("%s replacing %s", LOG_PREFIX, path)
        save_identity(pulid_id, path, thumb)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {filename} in {os.path.dirname(path)}"))


class LoadIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_LoadIdentity",
            display_name="Load Identity (PuLID)",
            **schema_extras(search_aliases=["PuLID", "face id", "load face", "identity file"]),
            category=CATEGORY,
            description="Loads a face identity saved by Save Identity from models/pulid_identities. Needs only the "
                        "PuLID model it was made with (checked): no face detector, EVA-CLIP or photo.",
            inputs=[
                io.Combo.Input("identity_file", options=identity_files(),
                               tooltip="A .safetensors identity in models/pulid_identities (written by Save "
                                       "Identity, or shared with you). Read without pickle and checked."),
                PulidModel.Input("pulid_model", tooltip="The PuLID model the identity was made with (checked)."),
            ],
            outputs=[PulidId.Output(display_name="pulid_id", tooltip="The face identity, for Apply PuLID-FLUX."),
                     io.String.Output(display_name="info", tooltip="What the file holds.")],
        )

    @classmethod
    def validate_inputs(cls, identity_file):
        # Replaces the plain 'not in list' check, so an absent file is explained before anything runs.
        return True if identity_file in identity_files() else missing_identity_message(identity_file)

    @classmethod
    def fingerprint_inputs(cls, identity_file, pulid_model):
        path = folder_paths.get_full_path(FOLDER, identity_file)
        return (path, os.stat(path).st_mtime_ns, os.stat(path).st_size) if path else None

    @classmethod
    def execute(cls, identity_file, pulid_model):
        path = folder_paths.get_full_path(FOLDER, identity_file)
        if path is None:
            raise IdentityFileError(missing_identity_message(identity_file))
        saved = load_identity(path)
        saved.identity.check_against(pulid_model.model, pulid_model.fingerprint)  # its message names the file
        text = describe(saved, path)
        if saved.thumbnail is None:
            return io.NodeOutput(saved.identity, text, ui=ui.PreviewText(text))
        shown = torch.from_numpy(np.ascontiguousarray(saved.thumbnail))[None].float() / 255.0
        return io.NodeOutput(saved.identity, text, ui=ui.PreviewImage(shown, cls=cls))


NODES = [SaveIdentity, LoadIdentity]
