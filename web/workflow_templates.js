// Gives the pack's workflows titles, descriptions and an order in the frontend's template browser. ComfyUI lists
// a pack's workflows/ folder at /workflow_templates as bare file names, and the frontends (1.27 to 1.58) show
// each under its file name, in the order the file system returns them; only the core index carries titles and
// descriptions. So the pack's entry is taken out of the custom list and added to the core index as a category
// of its own, from web/workflow_templates.json (written by scripts/build_workflows.py). Files and loading stay
// the frontend's: a category's templates are fetched from /api/workflow_templates/<pack>/<name>.json.
// Thumbnails do not: every frontend asks for api.apiURL("/workflow_templates/<pack>/<name>") + ".jpg", and cores
// after 0.33 serve only .json files there. The pack serves them itself (nodes/workflow_thumbnails.py), on every
// core, at THUMBNAILS, where apiURL sends the frontends for this pack's thumbnails.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

// This file is served at /extensions/<pack folder>/, the name ComfyUI lists the pack's templates under.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2)[0]);
const INDEX_URL = new URL("./workflow_templates.json", import.meta.url);
const THUMBNAILS = "/face-migration/workflow_thumbnails/"; // nodes/workflow_thumbnails.py ROUTE
const TEMPLATE_FILES = `/workflow_templates/${PACK}/`;
let indexPromise = null;

const loadIndex = () => (indexPromise ??= fetch(INDEX_URL).then((response) => response.json()));

const listCustom = api.getWorkflowTemplates.bind(api);
const listCore = api.getCoreWorkflowTemplates.bind(api);
const apiURL = api.apiURL.bind(api);

api.apiURL = function (route, ...rest) {
  // A template's JSON is asked for with its ".json"; its thumbnail without, the frontend appends ".jpg".
  const thumbnail = typeof route === "string" && route.startsWith(TEMPLATE_FILES) && !route.endsWith(".json");
  return apiURL(thumbnail ? THUMBNAILS + route.slice(TEMPLATE_FILES.length) : route, ...rest);
};

api.getWorkflowTemplates = async function () {
  const listed = await listCustom();
  if (listed && PACK in listed) delete listed[PACK]; // shown with the core index's categories instead
  return listed;
};

api.getCoreWorkflowTemplates = async function (...args) {
  const [categories, listed, index] = await Promise.all([listCore(...args), listCustom(), loadIndex()]);
  const served = new Set(listed?.[PACK] ?? []);
  // Titles in the interface language where the index has them (its "locales"): frontends 1.49 and later pass
  // the language, 1.27 has it in its settings only.
  const locale = args[0] ?? app.ui?.settings?.getSettingValue?.("Comfy.Locale");
  const templates = index.templates.filter((t) => served.has(t.name)).map((t) => ({
    name: t.name,
    title: t.locales?.[locale]?.title ?? t.title,
    description: t.locales?.[locale]?.description ?? t.description,
    mediaType: "image",
    mediaSubtype: "jpg",
  }));
  if (!templates.length || !Array.isArray(categories)) return categories;
  return [...categories, { moduleName: PACK, title: index.title, type: "image", templates }];
};
