// Shows the text results of Face Similarity (its report), Save Identity (the file it wrote and where) and Encode
// Face (faces found, which one was used) on the nodes themselves. The server sends them as the node's `text` UI
// output; the frontends only display that for their own text nodes (Preview Any, Save Text), so each of these
// nodes gets a read-only text box that the websocket's "executed" message fills. The box is display only: never
// saved in the workflow, never sent with the prompt.
//
// A node that comes from ComfyUI's cache gets its "executed" message again only where the server re-sends it:
// 0.33 does, 0.3.64 only for output nodes, which Encode Face is not. The prompt's history (GET /history/<id>) holds
// the UI output of every node of the prompt, cached ones included, so when a prompt succeeds, the boxes of this
// pack's cached nodes that got no "executed" message are filled from there.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const WIDGET = "result";
const PLACEHOLDERS = {
  FaceMigration_FaceSimilarity: "The similarity report shows here after a run.",
  FaceMigration_SaveIdentity: "The saved file's name and folder show here after a run.",
  FaceMigration_EncodeFace: "The faces found and the one used show here after a run.",
};
const HISTORY_TRIES = 20; // the server stores the history entry just after "execution_success"
const HISTORY_RETRY_MS = 250;
const cachedAwaitingResult = new Map(); // prompt id -> ids of this pack's cached nodes with no "executed" yet

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
  const widget = node?.widgets?.find((w) => w.name === WIDGET);
  if (!widget || text == null) return;
  widget.value = (Array.isArray(text) ? text : [text]).join("\n");
  node.setDirtyCanvas?.(true, false);
}

async function historyOutputs(promptId) {
  for (let attempt = 0; attempt < HISTORY_TRIES; attempt++) {
    const response = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
    const entry = response.ok ? (await response.json())[promptId] : undefined;
    if (entry) return entry.outputs ?? {};
    await new Promise((resolve) => setTimeout(resolve, HISTORY_RETRY_MS));
  }
  return {};
}

async function showCachedResults(promptId) {
  const ids = cachedAwaitingResult.get(promptId);
  cachedAwaitingResult.delete(promptId);
  if (!ids?.size) return;
  const outputs = await historyOutputs(promptId);
  for (const id of ids) showResult(app.graph.getNodeById(id), outputs[id]?.text);
}

function listenForCachedNodes() {
  api.addEventListener("execution_cached", ({ detail }) => {
    const ids = (detail?.nodes ?? []).map(String).filter((id) => PLACEHOLDERS[app.graph.getNodeById(id)?.type]);
    if (ids.length) cachedAwaitingResult.set(detail.prompt_id, new Set(ids));
  });
  api.addEventListener("executed", ({ detail }) => {
    cachedAwaitingResult.get(detail?.prompt_id)?.delete(String(detail.node));
  });
  api.addEventListener("execution_success", ({ detail }) => showCachedResults(detail?.prompt_id));
}

app.registerExtension({
  name: "FaceMigration.NodeResults",
  setup: listenForCachedNodes,
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
