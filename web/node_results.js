// Shows the text results of Face Similarity (its report), Save Identity (the file it wrote and where) and Encode
// Face (faces found, which one was used) on the nodes themselves. The server sends them as the node's `text` UI
// output; the frontends only display that for their own text nodes (Preview Any, Save Text), so each of these
// nodes gets a read-only text box that the websocket's "executed" message fills. The box is display only: never
// saved in the workflow, never sent with the prompt.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const WIDGET = "result";
const PLACEHOLDERS = {
  FaceMigration_FaceSimilarity: "The similarity report shows here after a run.",
  FaceMigration_SaveIdentity: "The saved file's name and folder show here after a run.",
  FaceMigration_EncodeFace: "The faces found and the one used show here after a run.",
};

function addResultWidget(node, placeholder) {
  const { widget } = ComfyWidgets.STRING(node, WIDGET, ["STRING", { multiline: true, placeholder }], app);
  widget.serialize = false; // not in widgets_values
  widget.options.serialize = false; // not in the prompt
  if (widget.element) {
    widget.element.readOnly = true;
    widget.element.placeholder = placeholder;
  }
  return widget;
}

function showResult(node, text) {
  const widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget || text == null) return;
  widget.value = (Array.isArray(text) ? text : [text]).join("\n");
  node.setDirtyCanvas?.(true, false);
}

app.registerExtension({
  name: "FaceMigration.NodeResults",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const placeholder = PLACEHOLDERS[nodeData.name];
    if (!placeholder) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addResultWidget(this, placeholder);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      showResult(this, message?.text);
      return result;
    };
  },
});
