// Draws the text of a workflow Note at the size its node asks for (property `face_migration_text_px`, written by
// scripts/build_workflows.py on the first Note of the pack's workflows). Frontends 1.49 and later open a template
// fitted to the screen (a zoom of about 0.6), where their 10 px Markdown text is 6 px; the first Note (how to
// use) asks for 16 px so that a newcomer reads it there without zooming. The frontends size a Markdown Note's text
// with CSS variables (--comfy-textarea-font-size, which 1.58 reads after --comfy-markdown-font-size); set on that
// Note's own element, they change this Note only and leave the user's setting for every other text box alone.
import { app } from "../../scripts/app.js";

const PROPERTY = "face_migration_text_px";
const SIZE_VARIABLES = ["--comfy-textarea-font-size", "--comfy-markdown-font-size"];

function applyTextSize(node) {
  const px = Number(node.properties?.[PROPERTY]);
  const element = node.widgets?.find((w) => w.element)?.element;
  if (!(px > 0) || !element) return;
  for (const variable of SIZE_VARIABLES) element.style.setProperty(variable, `${px}px`);
}

app.registerExtension({
  name: "FaceMigration.NoteTextSize",
  loadedGraphNode: applyTextSize,
});
