// Opens workflows made with the other PuLID-FLUX packs' nodes (balazik, lldacing, sipie800) with this pack's
// nodes: before the frontend checks for missing node types, each peer node whose pack is not installed is
// rewritten in the workflow data into this pack's node, its links and widget values mapped as web/peer_nodes.json
// says. ApplyPulidFlux encodes the face itself; here Encode Face does that, so it is added (with a face parsing
// loader) and wired from the peer node's image, EVA-CLIP, InsightFace and PuLID sockets. What has no equivalent
// is listed in a Note beside the node and in its properties, and logged in the browser console.
import { app } from "../../scripts/app.js";

const TABLE_URL = new URL("./peer_nodes.json", import.meta.url);
const LINK_FIELDS = ["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"];
const PROPERTY = "Face Migration: opened from";
const GAP = 40;
let tablePromise = null;

// Workflow version 0.4 stores a link as an array, version 1 as an object.
const linkGet = (link, field) => (Array.isArray(link) ? link[LINK_FIELDS.indexOf(field)] : link[field]);
function linkSet(link, field, value) {
  if (Array.isArray(link)) link[LINK_FIELDS.indexOf(field)] = value;
  else link[field] = value;
}

class Workflow {
  constructor(data) {
    this.data = data;
    this.links = new Map((data.links ?? []).map((link) => [linkGet(link, "id"), link]));
    this.nodes = new Map(data.nodes.map((node) => [node.id, node]));
    this.arrays = !data.links?.length || Array.isArray(data.links[0]);
    const ids = data.nodes.map((n) => Number(n.id)).filter(Number.isFinite);
    this.lastNode = Math.max(0, data.last_node_id ?? 0, data.state?.lastNodeId ?? 0, ...ids);
    this.lastLink = Math.max(0, data.last_link_id ?? 0, data.state?.lastLinkId ?? 0, ...this.links.keys());
  }

  newNodeId() {
    this.lastNode += 1;
    if ("last_node_id" in this.data) this.data.last_node_id = this.lastNode;
    if (this.data.state) this.data.state.lastNodeId = this.lastNode;
    return this.lastNode;
  }

  addNode(node) {
    this.data.nodes.push(node);
    this.nodes.set(node.id, node);
  }

  removeNode(node) {
    this.data.nodes.splice(this.data.nodes.indexOf(node), 1);
    this.nodes.delete(node.id);
  }

  connect(originId, originSlot, target, inputName) {
    const slot = target.inputs.findIndex((input) => input.name === inputName);
    const origin = this.nodes.get(originId);
    this.lastLink += 1;
    if ("last_link_id" in this.data) this.data.last_link_id = this.lastLink;
    if (this.data.state) this.data.state.lastLinkId = this.lastLink;
    const type = origin.outputs[originSlot].type;
    const values = [this.lastLink, originId, originSlot, target.id, slot, type];
    const link = this.arrays ? values : Object.fromEntries(LINK_FIELDS.map((f, i) => [f, values[i]]));
    this.data.links.push(link);
    this.links.set(this.lastLink, link);
    (origin.outputs[originSlot].links ??= []).push(this.lastLink);
    target.inputs[slot].link = this.lastLink;
  }

  // Moves an existing link's end onto another node's input (same origin).
  retarget(linkId, target, inputName) {
    const slot = target.inputs.findIndex((input) => input.name === inputName);
    if (slot < 0) return false;
    const link = this.links.get(linkId);
    linkSet(link, "target_id", target.id);
    linkSet(link, "target_slot", slot);
    linkSet(link, "type", target.inputs[slot].type);
    target.inputs[slot].link = linkId;
    return true;
  }

  dropLink(linkId) {
    const link = this.links.get(linkId);
    if (!link) return;
    const origin = this.nodes.get(linkGet(link, "origin_id"));
    const output = origin?.outputs?.[linkGet(link, "origin_slot")];
    if (output?.links) output.links = output.links.filter((id) => id !== linkId);
    this.data.links.splice(this.data.links.indexOf(link), 1);
    this.links.delete(linkId);
  }
}

// This pack's node as the running frontend serialises it, with the given widget values.
function freshNode(type, values) {
  const node = LiteGraph.createNode(type);
  for (const [name, value] of Object.entries(values)) {
    const widget = node.widgets?.find((w) => w.name === name);
    if (widget) widget.value = value;
  }
  const data = node.serialize();
  data.inputs ??= [];
  data.outputs ??= [];
  for (const output of data.outputs) output.links = [];
  return data;
}

function widgetValues(node, names) {
  const saved = Array.isArray(node.widgets_values) ? node.widgets_values : [];
  return Object.fromEntries(names.map((name, i) => [name, saved[i]]).filter(([, value]) => value !== undefined));
}

// New widget values from a spec's `set`, `values` and `choices`; what cannot be carried goes to `notes`.
function carryValues(spec, old, notes, texts = spec.notes ?? {}) {
  const values = { ...(spec.set ?? {}) };
  for (const [oldName, newName] of Object.entries(spec.values ?? {})) {
    if (!(oldName in old)) continue;
    const choices = spec.choices?.[oldName];
    if (!choices) values[newName] = old[oldName];
    else if (old[oldName] in choices) values[newName] = choices[old[oldName]];
    else notes.push(`${oldName} = ${JSON.stringify(old[oldName])}: ${texts[oldName] ?? "no equivalent"}`);
  }
  for (const [name, same] of Object.entries(spec.same ?? {})) {
    if (name in old && old[name] !== same && !(name in (spec.values ?? {}))) {
      notes.push(`${name} = ${JSON.stringify(old[name])}: ${texts[name] ?? "no equivalent"}`);
    }
  }
  return values;
}

function place(node, x, y) {
  node.pos = [x, y];
  return node;
}

function rewriteNode(flow, old, entry) {
  const notes = [];
  const oldValues = widgetValues(old, entry.widgets);
  const encoderSpec = entry.encoder;
  // Folded peer nodes (PulidFluxOptions) feed the encoder's widgets.
  const folded = [];
  const encoderValues = encoderSpec ? carryValues(encoderSpec, oldValues, notes, entry.notes) : {};
  for (const [inputName, fold] of Object.entries(encoderSpec?.folds ?? {})) {
    const linkId = old.inputs?.find((input) => input.name === inputName)?.link;
    const source = linkId != null && flow.nodes.get(linkGet(flow.links.get(linkId), "origin_id"));
    if (!source || source.type !== fold.type || source.type in LiteGraph.registered_node_types) continue;
    Object.assign(encoderValues, carryValues(fold, widgetValues(source, fold.widgets), notes));
    folded.push(source);
  }
  const main = freshNode(entry.new_type, carryValues(entry, oldValues, notes));
  Object.assign(main, { id: old.id, order: old.order, mode: old.mode ?? 0, flags: old.flags ?? {} });
  for (const key of ["color", "bgcolor"]) if (old[key]) main[key] = old[key];
  place(main, old.pos[0], old.pos[1]);
  flow.removeNode(old);
  flow.addNode(main);

  let encoder = null;
  if (encoderSpec) {
    // Below every node of the workflow, so that nothing is drawn over another node.
    const bottom = Math.max(...[...flow.nodes.values()].map((n) => (n.pos?.[1] ?? 0) + (n.size?.[1] ?? 0)));
    encoder = place(freshNode(encoderSpec.new_type, encoderValues), old.pos[0], bottom + 2 * GAP);
    encoder.id = flow.newNodeId();
    flow.addNode(encoder);
    let left = encoder.pos[0];
    for (const [inputName, loader] of Object.entries(encoderSpec.loaders ?? {})) {
      const node = freshNode(loader.new_type, loader.set ?? {});
      left -= node.size[0] + GAP;
      place(node, left, encoder.pos[1]).id = flow.newNodeId();
      flow.addNode(node);
      flow.connect(node.id, 0, encoder, inputName);
    }
    const outputSlot = encoder.outputs.findIndex((output) => output.name === encoderSpec.output);
    flow.connect(encoder.id, outputSlot, main, encoderSpec.into);
  }

  for (const input of old.inputs ?? []) {
    if (input.link == null || !flow.links.has(input.link)) continue;
    const toMain = entry.inputs?.[input.name] ?? entry.values?.[input.name];
    const toEncoder = encoderSpec?.inputs?.[input.name];
    const link = flow.links.get(input.link);
    if (toMain && toEncoder) {
      flow.connect(linkGet(link, "origin_id"), linkGet(link, "origin_slot"), encoder, toEncoder);
    }
    const kept = (toMain && flow.retarget(input.link, main, toMain))
      || (!toMain && toEncoder && flow.retarget(input.link, encoder, toEncoder));
    if (!kept) {
      if (!(input.name in (encoderSpec?.folds ?? {}))) {
        notes.push(`input ${input.name}: ${entry.notes?.[input.name] ?? "no equivalent"}; its link is removed`);
      }
      flow.dropLink(input.link);
    }
  }
  for (const [oldSlot, output] of (old.outputs ?? []).entries()) {
    const newSlot = entry.outputs[oldSlot];
    for (const linkId of output.links ?? []) {
      const link = flow.links.get(linkId);
      if (!link) continue;
      if (newSlot == null) {
        flow.dropLink(linkId);
        continue;
      }
      linkSet(link, "origin_slot", newSlot);
      linkSet(link, "type", main.outputs[newSlot].type);
      main.outputs[newSlot].links.push(linkId);
    }
  }
  const record = { type: old.type, title: entry.title, not_carried: notes };
  main.properties = { ...(main.properties ?? {}), [PROPERTY]: record };
  if (notes.length) {
    const text = `${entry.title} (${old.type}, from another PuLID-FLUX pack) was opened as this pack's nodes.`
      + ` Not carried over:\n- ${notes.join("\n- ")}`;
    const note = freshNode("Note", {});
    note.widgets_values = [text];
    place(note, old.pos[0], old.pos[1] - (note.size?.[1] ?? 100) - GAP).id = flow.newNodeId();
    flow.addNode(note);
    console.warn(`[Face Migration] ${text}`);
  }
  console.info(`[Face Migration] ${old.type} #${old.id} opened as ${entry.new_type}`
    + (encoder ? ` with ${encoderSpec.new_type} #${encoder.id}` : ""));
  return folded;
}

async function rewritePeerNodes(graphData) {
  if (!Array.isArray(graphData?.nodes)) return;
  const registered = LiteGraph.registered_node_types;
  if (graphData.nodes.every((node) => node.type in registered)) return;
  tablePromise ??= fetch(TABLE_URL).then((response) => response.json());
  const table = await tablePromise;
  // A peer pack that is installed keeps its nodes; this pack's node must be there to replace one.
  const replaceable = (node) => node.type in table.nodes && !(node.type in registered)
    && table.nodes[node.type].new_type in registered;
  if (!graphData.nodes.some(replaceable)) return;
  // Rewritten on a copy: a failure leaves the workflow as it was (the frontend then reports the missing nodes).
  const copy = structuredClone(graphData);
  const flow = new Workflow(copy);
  try {
    const folded = new Set();
    for (const old of copy.nodes.filter(replaceable)) {
      for (const source of rewriteNode(flow, old, table.nodes[old.type])) folded.add(source);
    }
    for (const source of folded) {
      if (!source.outputs.some((output) => output.links?.length)) flow.removeNode(source);
    }
  } catch (error) {
    console.error("[Face Migration] the other PuLID-FLUX packs' nodes could not be opened as this pack's", error);
    return;
  }
  Object.assign(graphData, copy);
}

app.registerExtension({
  name: "FaceMigration.PeerNodes",
  async beforeConfigureGraph(graphData) {
    await rewritePeerNodes(graphData);
  },
});
