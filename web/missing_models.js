// Keeps the Missing Models dialog true for this pack's loaders. Each loader node carries `properties.models`
// (file, folder, URL) for the files its widgets name, so the frontends list an absent one. Frontend 1.27 checks
// those entries against ComfyUI's model listing, which never shows .onnx files (antelopev2): left alone it would
// call them missing even when installed. The server's own list of choices for the node says what is installed,
// so before the check the entries it lists are set aside, and they are put back once the graph is loaded, so a
// saved workflow keeps them. Only this pack's nodes are touched.
import { app } from "../../scripts/app.js";

const PACK_NODE_PREFIX = "FaceMigration_";
const setAside = [];

// Every choice the server offers in a node's combos: files on disk (V1 `[[...]]` or `["COMBO", {options}]`).
function installedChoices(nodeType) {
  const input = LiteGraph.registered_node_types[nodeType]?.nodeData?.input ?? {};
  const choices = new Set();
  for (const spec of [...Object.values(input.required ?? {}), ...Object.values(input.optional ?? {})]) {
    const options = Array.isArray(spec?.[0]) ? spec[0] : spec?.[1]?.options;
    for (const option of options ?? []) choices.add(option);
  }
  return choices;
}

function packNodes(graphData) {
  const root = (graphData?.nodes ?? []).map((node) => ({ node, subgraph: null }));
  const inner = (graphData?.definitions?.subgraphs ?? []).flatMap((subgraph) =>
    (subgraph.nodes ?? []).map((node) => ({ node, subgraph: subgraph.id })));
  return [...root, ...inner].filter(({ node }) =>
    node?.type?.startsWith(PACK_NODE_PREFIX) && Array.isArray(node.properties?.models));
}

app.registerExtension({
  name: "FaceMigration.MissingModels",
  beforeConfigureGraph(graphData) {
    setAside.length = 0;
    for (const { node, subgraph } of packNodes(graphData)) {
      const installed = installedChoices(node.type);
      const models = node.properties.models;
      if (!models.some((model) => installed.has(model?.name))) continue;
      setAside.push({ id: node.id, subgraph, models });
      node.properties = { ...node.properties, models: models.filter((model) => !installed.has(model?.name)) };
    }
  },
  afterConfigureGraph() {
    for (const { id, subgraph, models } of setAside.splice(0)) {
      const graph = subgraph ? app.graph.subgraphs?.get(subgraph) : app.graph;
      const node = graph?.getNodeById(id);
      if (node?.properties) node.properties.models = models;
    }
  },
});
