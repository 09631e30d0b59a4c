// Opens workflows made with the other PuLID-FLUX packs' nodes (balazik, lldacing, sipie800 and forks) with this
// pack's nodes: before the frontend checks for missing node types, each peer node whose pack is not installed is
// rewritten in the workflow data into this pack's node, its links and widget values mapped as web/peer_nodes.json
// says. A peer node's widget values are read by the variant whose widget layout (count and kinds) they fit; values
// fitting no known layout are reported, never guessed. ApplyPulidFlux encodes the face itself; here Encode Face does
// that, so it is added (with a face parsing loader) and wired from the peer node's image, EVA-CLIP, InsightFace and
// PuLID sockets. Nodes that grew or were added are moved apart so that none covers another. What has no equivalent
// is listed in a Note sized to its text beside the node, in the node's properties and in the browser console.
//
// An API-format prompt (class_type per node id) dropped on the page is rewritten the same way before the frontend
// reads it: none of frontends 1.27 to 1.58 calls beforeConfigureGraph for one, so the drop is caught, the file
// rewritten, and dropped again for the frontend's own handling.
import { app } from "../../scripts/app.js";

const TABLE_URL = new URL("./peer_nodes.json", import.meta.url);
const LINK_FIELDS = ["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"];
const PROPERTY = "Face Migration: opened from";
const GAP = 40;
const NOTE_WIDTH = 480;
let tablePromise = null;

const loadTable = () => (tablePromise ??= fetch(TABLE_URL).then((response) => response.json()));

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

  // Moves an existing link's start onto another node's output (same target).
  reorigin(linkId, origin, slot) {
    const link = this.links.get(linkId);
    linkSet(link, "origin_id", origin.id);
    linkSet(link, "origin_slot", slot);
    linkSet(link, "type", origin.outputs[slot].type);
    origin.outputs[slot].links.push(linkId);
  }

  dropLink(linkId) {
    const link = this.links.get(linkId);
    if (!link) return;
    const origin = this.nodes.get(linkGet(link, "origin_id"));
    const output = origin?.outputs?.[linkGet(link, "origin_slot")];
    if (output?.links) output.links = output.links.filter((id) => id !== linkId);
    const target = this.nodes.get(linkGet(link, "target_id"));
    const input = target?.inputs?.[linkGet(link, "target_slot")];
    if (input?.link === linkId) input.link = null;
    this.data.links.splice(this.data.links.indexOf(link), 1);
    this.links.delete(linkId);
  }

  // The node and output slot feeding a node's input (by name), or null.
  source(node, inputName) {
    const linkId = node.inputs?.find((input) => input.name === inputName)?.link;
    const link = linkId == null ? null : this.links.get(linkId);
    return link ? { node: this.nodes.get(linkGet(link, "origin_id")), slot: linkGet(link, "origin_slot") } : null;
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

const KIND_CHECKS = {
  FLOAT: (v) => typeof v === "number",
  INT: (v) => Number.isInteger(v),
  COMBO: (v) => typeof v === "string",
  BOOLEAN: (v) => typeof v === "boolean",
};

// A saved node's widget values by name, read with the layout (of the spec's variants) they fit in count and kinds.
// Returns {values, layout}; layout is null where they fit none (values is then empty).
function readWidgets(node, spec) {
  const saved = node.widgets_values ?? [];
  if (!Array.isArray(saved)) return { values: { ...saved }, layout: spec.layouts[0] };  // saved by name
  const layout = spec.layouts.find((candidate) => candidate.widgets.length === saved.length
    && candidate.widgets.every(([, kind], i) => KIND_CHECKS[kind](saved[i])));
  if (!layout) return { values: {}, layout: null };
  return { values: Object.fromEntries(layout.widgets.map(([name], i) => [name, saved[i]])), layout };
}

function unknownLayoutNote(type, saved, spec) {
  const known = spec.layouts.map((l) => `${l.widgets.length} (${l.widgets.map(([, kind]) => kind).join(", ")})`
    + ` from ${l.packs.join(", ")}`);
  return `widget values ${JSON.stringify(saved)} fit no known layout of ${type} (known: ${known.join("; ")}):`
    + " none is carried over, this pack's defaults are used";
}

function holds(old, conditions = {}) {
  return Object.entries(conditions).every(([name, allowed]) => allowed.includes(old[name]));
}

// New widget values from a spec's `set`, `values` and `choices`; what cannot be carried goes to `notes`.
function carryValues(spec, old, notes, entry = spec) {
  const texts = entry.notes ?? {};
  const values = { ...(spec.set ?? {}) };
  for (const [oldName, newName] of Object.entries(spec.values ?? {})) {
    if (!(oldName in old)) continue;
    const choices = spec.choices?.[oldName];
    if (!choices) values[newName] = old[oldName];
    else if (old[oldName] in choices) values[newName] = choices[old[oldName]];
    else if (old[oldName] !== entry.same?.[oldName]) {
      notes.push(`${oldName} = ${JSON.stringify(old[oldName])}: ${texts[oldName] ?? "no equivalent"}`);
    }
  }
  const carried = { ...entry.values, ...entry.encoder?.values, ...spec.values };
  for (const [name, same] of Object.entries(spec.same ?? {})) {
    if (name in old && old[name] !== same && !(name in carried) && holds(old, spec.used_when?.[name])) {
      notes.push(`${name} = ${JSON.stringify(old[name])}: ${texts[name] ?? "no equivalent"}`);
    }
  }
  return values;
}

// --- Layout: boxes as the frontend draws them (the title bar above pos) -------------------------------------------

const titleHeight = () => LiteGraph.NODE_TITLE_HEIGHT ?? 30;
function box(node) {
  const [x, y] = [node.pos[0], node.pos[1]];
  return { left: x, top: y - titleHeight(), right: x + node.size[0], bottom: y + node.size[1] };
}
const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

// Moves nodes below or to the right (whichever is the shorter move) until no node that grew or was added covers
// another; pairs that overlapped in the saved workflow are left as the author had them.
function separate(flow, changed, savedBoxes) {
  const queue = [...changed];
  const overlappedBefore = (a, b) => savedBoxes.has(a.id) && savedBoxes.has(b.id)
    && overlap(savedBoxes.get(a.id), savedBoxes.get(b.id));
  for (let steps = 0; queue.length && steps < 20 * flow.data.nodes.length ** 2; steps += 1) {
    const node = queue.shift();
    const mine = box(node);
    for (const other of flow.data.nodes) {
      const theirs = box(other);
      if (other === node || !overlap(mine, theirs) || overlappedBefore(node, other)) continue;
      const down = mine.bottom + GAP - theirs.top;
      const right = mine.right + GAP - theirs.left;
      other.pos = right < down ? [other.pos[0] + right, other.pos[1]] : [other.pos[0], other.pos[1] + down];
      queue.push(other);
    }
  }
}

// Each group keeps holding the nodes it held (it grows to their new boxes).
function fitGroups(flow, members) {
  for (const [group, ids] of members) {
    const boxes = ids.filter((id) => flow.nodes.has(id)).map((id) => box(flow.nodes.get(id)));
    if (!boxes.length) continue;
    const [x, y, w, h] = group.bounding;
    const pad = 10;
    const left = Math.min(x, ...boxes.map((b) => b.left - pad));
    const top = Math.min(y, ...boxes.map((b) => b.top - pad - titleHeight()));  // room for the group's title
    const right = Math.max(x + w, ...boxes.map((b) => b.right + pad));
    const bottom = Math.max(y + h, ...boxes.map((b) => b.bottom + pad));
    group.bounding = [left, top, right - left, bottom - top];
  }
}

function groupMembers(data) {
  return new Map((data.groups ?? []).filter((g) => Array.isArray(g.bounding)).map((group) => {
    const [x, y, w, h] = group.bounding;
    const inside = data.nodes.filter((node) => {
      const b = box(node);
      return b.left >= x && b.top >= y && b.right <= x + w && b.bottom <= y + h;
    });
    return [group, inside.map((node) => node.id)];
  }));
}

// The Note's height for its text at the width given, measured as the frontend's multiline widget lays it out.
function noteHeight(text, width) {
  const probe = document.createElement("textarea");
  probe.className = "comfy-multiline-input";
  Object.assign(probe.style, { position: "absolute", visibility: "hidden", width: `${width - 20}px`,
                               height: "0px", overflow: "hidden", whiteSpace: "pre-wrap" });
  probe.value = text;
  document.body.append(probe);
  const height = probe.scrollHeight;
  probe.remove();
  return height + 40;  // the widget's margins and a line's slack
}

// Above, right of, below or left of the node, wherever the Note covers nothing; else above the whole workflow.
function placeNote(flow, note, node) {
  const [w, h] = note.size;
  const b = box(node);
  const title = titleHeight();
  const candidates = [[b.left, b.top - GAP - h], [b.right + GAP, b.top + title], [b.left, b.bottom + GAP + title],
                      [b.left - GAP - w, b.top + title]];
  const free = candidates.find(([x, y]) => {
    const mine = { left: x, top: y - title, right: x + w, bottom: y + h };
    return flow.data.nodes.every((other) => !overlap(mine, box(other)));
  });
  const top = Math.min(...flow.data.nodes.map((n) => box(n).top));
  note.pos = free ?? [b.left, top - GAP - h];
}

// --- Rewriting one peer node ---------------------------------------------------------------------------------------

class Rewrite {
  constructor(flow, table, registered) {
    Object.assign(this, { flow, table, registered, changed: [], folded: new Set(), encoders: new Map(),
                         rewritten: new Map() });
  }

  // An existing node of the loader's type (one face parsing loader serves every Encode Face), else a new one.
  loaderFor(loader, near) {
    const existing = this.flow.data.nodes.find((node) => node.type === loader.new_type);
    if (existing) return existing;
    const node = freshNode(loader.new_type, loader.set ?? {});
    node.pos = [near.pos[0] - node.size[0] - GAP, near.pos[1]];
    node.id = this.flow.newNodeId();
    this.flow.addNode(node);
    this.changed.push(node);
    return node;
  }

  // Folded peer nodes (PulidFluxOptions) feeding the old node: their widgets go into the encoder's values.
  fold(old, folds, values, notes) {
    for (const [inputName, fold] of Object.entries(folds ?? {})) {
      const source = this.flow.source(old, inputName)?.node;
      if (!source || source.type !== fold.type || source.type in this.registered) continue;
      const { values: saved, layout } = readWidgets(source, fold);
      if (!layout) notes.push(`${fold.type}: ${unknownLayoutNote(fold.type, source.widgets_values, fold)}`);
      Object.assign(values, carryValues(fold, saved, notes));
      this.folded.add(source);
    }
  }

  // The key by which a face detector finds the Encode Face of an Apply node: same photo, same options.
  static encoderKey(flow, node) {
    const from = (name) => {
      const source = flow.source(node, name);
      return source ? `${source.node.id}:${source.slot}` : "-";
    };
    return `${from("image")}|${from("options")}`;
  }

  node(old, entry) {
    const notes = [];
    const { values: saved, layout } = readWidgets(old, entry);
    if (!layout) notes.push(unknownLayoutNote(old.type, old.widgets_values, entry));
    const encoderSpec = entry.encoder;
    const folds = encoderSpec?.folds ?? this.table.nodes[entry.merge_into]?.encoder?.folds;
    const key = Rewrite.encoderKey(this.flow, old);
    const merged = entry.merge_into ? this.encoders.get(`${entry.merge_into}|${key}`) : null;
    if (merged) return this.mergeInto(old, entry, merged);

    const mainValues = carryValues(entry, saved, notes);
    const encoderValues = encoderSpec ? carryValues(encoderSpec, saved, notes, entry) : {};
    this.fold(old, folds, encoderSpec ? encoderValues : mainValues, notes);
    const main = freshNode(entry.new_type, mainValues);
    Object.assign(main, { id: old.id, order: old.order, mode: old.mode ?? 0, flags: old.flags ?? {} });
    for (const field of ["color", "bgcolor"]) if (old[field]) main[field] = old[field];
    main.pos = [old.pos[0], old.pos[1]];
    this.flow.removeNode(old);
    this.flow.addNode(main);
    this.changed.push(main);

    let encoder = null;
    if (encoderSpec) {
      // Below every node of the workflow: nothing there to cover.
      const bottom = Math.max(...this.flow.data.nodes.map((n) => box(n).bottom));
      encoder = freshNode(encoderSpec.new_type, encoderValues);
      encoder.pos = [old.pos[0], bottom + GAP + titleHeight()];
      encoder.id = this.flow.newNodeId();
      this.flow.addNode(encoder);
      this.changed.push(encoder);
      const outputSlot = encoder.outputs.findIndex((output) => output.name === encoderSpec.output);
      this.flow.connect(encoder.id, outputSlot, main, encoderSpec.into);
      this.encoders.set(`${old.type}|${key}`, encoder);
    }
    const fedBy = encoder ?? main;
    for (const [inputName, loader] of Object.entries((encoderSpec ?? entry).loaders ?? {})) {
      this.flow.connect(this.loaderFor(loader, fedBy).id, 0, fedBy, inputName);
    }
    this.moveInputs(old, entry, main, encoder, folds, notes);
    this.moveOutputs(old, entry, main);
    const record = { type: old.type, title: entry.title, layout: layout?.packs ?? null, not_carried: notes };
    main.properties = { ...(main.properties ?? {}), [PROPERTY]: record };
    this.rewritten.set(main.id, { main, record });
    console.info(`[Face Migration] ${old.type} #${old.id} opened as ${entry.new_type}`
      + (encoder ? ` with ${encoderSpec.new_type} #${encoder.id}` : ""));
  }

  // A face detector fed like an Apply node's Encode Face: its consumers take that Encode Face's preview.
  mergeInto(old, entry, encoder) {
    const slot = encoder.outputs.findIndex((output) => output.name === entry.outputs_to);
    for (const output of old.outputs ?? []) {
      for (const linkId of output.links ?? []) {
        if (this.flow.links.has(linkId)) this.flow.reorigin(linkId, encoder, slot);
      }
    }
    for (const input of old.inputs ?? []) if (input.link != null) this.flow.dropLink(input.link);
    this.flow.removeNode(old);
    console.info(`[Face Migration] ${old.type} #${old.id} opened as the preview of ${encoder.type} #${encoder.id}`);
  }

  moveInputs(old, entry, main, encoder, folds, notes) {
    const encoderSpec = entry.encoder;
    for (const input of old.inputs ?? []) {
      if (input.link == null || !this.flow.links.has(input.link)) continue;
      const toMain = entry.inputs?.[input.name] ?? entry.values?.[input.name];
      const toEncoder = encoderSpec?.inputs?.[input.name];
      const link = this.flow.links.get(input.link);
      if (toMain && toEncoder) {
        this.flow.connect(linkGet(link, "origin_id"), linkGet(link, "origin_slot"), encoder, toEncoder);
      }
      const kept = (toMain && this.flow.retarget(input.link, main, toMain))
        || (!toMain && toEncoder && this.flow.retarget(input.link, encoder, toEncoder));
      if (!kept) {
        if (!(input.name in (folds ?? {}))) {
          notes.push(`input ${input.name}: ${entry.notes?.[input.name] ?? "no equivalent"}; its link is removed`);
        }
        this.flow.dropLink(input.link);
      }
    }
  }

  moveOutputs(old, entry, main) {
    for (const [oldSlot, output] of (old.outputs ?? []).entries()) {
      const newSlot = entry.outputs_to != null
        ? main.outputs.findIndex((o) => o.name === entry.outputs_to) : entry.outputs[oldSlot];
      for (const linkId of output.links ?? []) {
        if (!this.flow.links.has(linkId)) continue;
        if (newSlot == null || newSlot < 0) this.flow.dropLink(linkId);
        else this.flow.reorigin(linkId, main, newSlot);
      }
    }
  }

  // Once every peer node is rewritten: a link from or to a rewritten node whose ends take different types (another
  // pack's node fed by a replaced loader) is removed, and the rewritten node's Note says so.
  dropMistypedLinks() {
    for (const link of [...this.flow.links.values()]) {
      const origin = this.flow.nodes.get(linkGet(link, "origin_id"));
      const target = this.flow.nodes.get(linkGet(link, "target_id"));
      const owner = this.rewritten.get(origin?.id) ?? this.rewritten.get(target?.id);
      const given = origin?.outputs?.[linkGet(link, "origin_slot")]?.type;
      const taken = target?.inputs?.[linkGet(link, "target_slot")]?.type;
      if (!owner || !given || !taken || given === taken || given === "*" || taken === "*") continue;
      if (String(taken).split(",").includes(given)) continue;
      owner.record.not_carried.push(`link to ${target.type} #${target.id} (${target.inputs[linkGet(link, "target_slot")]
        .name}, which takes ${taken}, not ${given}): removed`);
      this.flow.dropLink(linkGet(link, "id"));
    }
  }

  // A Note beside each rewritten node that lost something, sized to its text, over no node.
  addNotes() {
    for (const { main, record } of this.rewritten.values()) {
      if (!record.not_carried.length) continue;
      const text = `${record.title} (${record.type}, from another PuLID-FLUX pack) was opened as this pack's nodes.`
        + ` Not carried over:\n- ${record.not_carried.join("\n- ")}`;
      const note = freshNode("Note", {});
      note.widgets_values = [text];
      note.size = [NOTE_WIDTH, noteHeight(text, NOTE_WIDTH)];
      note.id = this.flow.newNodeId();
      note.pos = [0, 0];
      placeNote(this.flow, note, main);
      this.flow.addNode(note);
      console.warn(`[Face Migration] ${text}`);
    }
  }
}

function rewriteWorkflow(data, table, registered) {
  const flow = new Workflow(data);
  const savedBoxes = new Map(data.nodes.filter((n) => n.pos && n.size).map((n) => [n.id, box(n)]));
  const members = groupMembers(data);
  const rewrite = new Rewrite(flow, table, registered);
  const replaceable = (node) => node.type in table.nodes && !(node.type in registered)
    && table.nodes[node.type].new_type in registered;
  // Nodes that merge into another's encoder come after those.
  const peers = data.nodes.filter(replaceable)
    .sort((a, b) => Number("merge_into" in table.nodes[a.type]) - Number("merge_into" in table.nodes[b.type]));
  for (const old of peers) rewrite.node(old, table.nodes[old.type]);
  for (const source of rewrite.folded) {
    if (!source.outputs.some((output) => output.links?.length)) flow.removeNode(source);
  }
  rewrite.dropMistypedLinks();
  separate(flow, rewrite.changed.filter((node) => flow.nodes.get(node.id) === node), savedBoxes);
  rewrite.addNotes();
  fitGroups(flow, members);
}

// --- API-format prompts ({id: {class_type, inputs, _meta}}) ----------------------------------------------------------

const isApiPrompt = (data) => data && typeof data === "object" && !Array.isArray(data) && Object.keys(data).length > 0
  && Object.values(data).every((node) => typeof node?.class_type === "string" && node.inputs
                                         && typeof node.inputs === "object" && !Array.isArray(node.inputs));

function outputSlot(type, name) {
  return LiteGraph.createNode(type).outputs.findIndex((output) => output.name === name);
}

// The prompt with each replaceable peer node rewritten as in a workflow: widget values come by name here, links are
// [node id, output slot]. What is not carried over goes into a Note node (the frontend shows it; it is not queued).
function rewriteApiPrompt(prompt, table, registered) {
  const out = structuredClone(prompt);
  let last = Math.max(0, ...Object.keys(out).map(Number).filter(Number.isFinite));
  const add = (node) => {
    last += 1;
    out[String(last)] = node;
    return String(last);
  };
  const loaderFor = (loader) => Object.keys(out).find((id) => out[id].class_type === loader.new_type)
    ?? add({ class_type: loader.new_type, inputs: { ...(loader.set ?? {}) } });
  const outputs = new Map();  // old node id -> (old slot -> new [id, slot] or null)
  const encoders = new Map();
  const folded = new Set();
  const notes = [];
  const isLink = (value) => Array.isArray(value) && value.length === 2;
  const replaceable = (id) => out[id].class_type in table.nodes && !(out[id].class_type in registered)
    && table.nodes[out[id].class_type].new_type in registered;
  const ids = Object.keys(out).filter(replaceable)
    .sort((a, b) => Number("merge_into" in table.nodes[out[a].class_type])
                    - Number("merge_into" in table.nodes[out[b].class_type]));
  for (const id of ids) {
    const old = out[id];
    const entry = table.nodes[old.class_type];
    const saved = Object.fromEntries(Object.entries(old.inputs).filter(([, v]) => !isLink(v)));
    const links = Object.fromEntries(Object.entries(old.inputs).filter(([, v]) => isLink(v)));
    const encoderSpec = entry.encoder;
    const folds = encoderSpec?.folds ?? table.nodes[entry.merge_into]?.encoder?.folds ?? {};
    const key = `${JSON.stringify(links.image ?? null)}|${JSON.stringify(links.options ?? null)}`;
    const merged = entry.merge_into && encoders.get(`${entry.merge_into}|${key}`);
    if (merged) {
      const slot = outputSlot(entry.new_type, entry.outputs_to);
      outputs.set(id, () => [merged, slot]);
      delete out[id];
      continue;
    }
    const nodeNotes = [];
    const title = old._meta?.title ?? entry.title;
    const main = { class_type: entry.new_type, inputs: carryValues(entry, saved, nodeNotes), _meta: { title } };
    const encoder = encoderSpec && { class_type: encoderSpec.new_type,
                                     inputs: carryValues(encoderSpec, saved, nodeNotes, entry), _meta: {} };
    const fed = encoder ?? main;
    for (const [inputName, fold] of Object.entries(folds)) {
      const sourceId = links[inputName] && String(links[inputName][0]);
      const source = out[sourceId];
      if (source?.class_type !== fold.type || fold.type in registered) continue;
      const values = Object.fromEntries(Object.entries(source.inputs).filter(([, v]) => !isLink(v)));
      Object.assign(fed.inputs, carryValues(fold, values, nodeNotes));
      folded.add(sourceId);
    }
    for (const [name, link] of Object.entries(links)) {
      const toMain = entry.inputs?.[name];
      const toEncoder = encoderSpec?.inputs?.[name];
      if (toMain) main.inputs[toMain] = link;
      if (toEncoder) encoder.inputs[toEncoder] = link;
      if (!toMain && !toEncoder && !(name in folds)) {
        nodeNotes.push(`input ${name}: ${entry.notes?.[name] ?? "no equivalent"}; its link is removed`);
      }
    }
    if (encoder) {
      const encoderId = add(encoder);
      main.inputs[encoderSpec.into] = [encoderId, outputSlot(encoderSpec.new_type, encoderSpec.output)];
      encoders.set(`${old.class_type}|${key}`, encoderId);
    }
    for (const [inputName, loader] of Object.entries((encoderSpec ?? entry).loaders ?? {})) {
      fed.inputs[inputName] = [loaderFor(loader), 0];
    }
    const slotTo = entry.outputs_to != null ? outputSlot(entry.new_type, entry.outputs_to) : null;
    outputs.set(id, (slot) => {
      const newSlot = slotTo ?? entry.outputs[slot];
      return newSlot == null ? null : [id, newSlot];
    });
    out[id] = main;
    if (nodeNotes.length) notes.push(`${title} (${old.class_type}, node ${id}):\n- ${nodeNotes.join("\n- ")}`);
  }
  for (const node of Object.values(out)) {
    for (const [name, value] of Object.entries(node.inputs)) {
      if (!isLink(value) || !outputs.has(String(value[0]))) continue;
      const mapped = outputs.get(String(value[0]))(value[1]);
      if (mapped) node.inputs[name] = mapped;
      else delete node.inputs[name];
    }
  }
  for (const id of folded) {
    const used = Object.values(out).some((node) => Object.values(node.inputs).some((v) => isLink(v)
                                                                                   && String(v[0]) === id));
    if (!used) delete out[id];
  }
  if (notes.length) {
    const text = "Nodes of another PuLID-FLUX pack were opened as this pack's nodes. Not carried over:\n"
      + notes.join("\n");
    add({ class_type: "Note", inputs: { text }, _meta: { title: "Face Migration: not carried over" } });
    console.warn(`[Face Migration] ${text}`);
  }
  return out;
}

// Frontends 1.27 to 1.58 load a dropped API-format JSON without calling beforeConfigureGraph (1.27 refuses one with
// unknown node types before building anything). A dropped .json is therefore caught before the frontend's own drop
// handler, read, rewritten where it is an API prompt with replaceable peer nodes, and dropped again unchanged
// otherwise, for the frontend to load as it would have.
function catchDroppedApiPrompts() {
  const resent = new WeakSet();
  window.addEventListener("drop", (event) => {
    const files = event.dataTransfer?.files;
    if (resent.has(event) || files?.length !== 1) return;
    const [file] = files;
    if (!(file.type === "application/json" || file.name.toLowerCase().endsWith(".json"))) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    const target = event.target?.isConnected ? event.target : document;
    const init = { bubbles: true, cancelable: true, composed: true, clientX: event.clientX, clientY: event.clientY,
                   screenX: event.screenX, screenY: event.screenY };
    (async () => {
      let dropped = file;
      try {
        const data = JSON.parse(await file.text());
        const registered = LiteGraph.registered_node_types;
        if (isApiPrompt(data) && Object.values(data).some((node) => !(node.class_type in registered))) {
          const rewritten = rewriteApiPrompt(data, await loadTable(), registered);
          dropped = new File([JSON.stringify(rewritten)], file.name, { type: "application/json" });
        }
      } catch (error) {
        console.error("[Face Migration] a dropped API prompt's peer nodes could not be rewritten", error);
      }
      const transfer = new DataTransfer();
      transfer.items.add(dropped);
      const again = new DragEvent("drop", { ...init, dataTransfer: transfer });
      resent.add(again);
      target.dispatchEvent(again);
    })();
  }, true);
}

async function rewritePeerNodes(graphData) {
  if (!Array.isArray(graphData?.nodes)) return;
  const registered = LiteGraph.registered_node_types;
  if (graphData.nodes.every((node) => node.type in registered)) return;
  const table = await loadTable();
  // A peer pack that is installed keeps its nodes; this pack's node must be there to replace one.
  if (!graphData.nodes.some((node) => node.type in table.nodes && !(node.type in registered))) return;
  // Rewritten on a copy: a failure leaves the workflow as it was (the frontend then reports the missing nodes).
  const copy = structuredClone(graphData);
  try {
    rewriteWorkflow(copy, table, registered);
  } catch (error) {
    console.error("[Face Migration] the other PuLID-FLUX packs' nodes could not be opened as this pack's", error);
    return;
  }
  Object.assign(graphData, copy);
}

app.registerExtension({
  name: "FaceMigration.PeerNodes",
  setup() {
    catchDroppedApiPrompts();
  },
  async beforeConfigureGraph(graphData) {
    await rewritePeerNodes(graphData);
  },
});
