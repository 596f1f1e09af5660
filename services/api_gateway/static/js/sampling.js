// The settings dialog's sampling fields (max tokens, temperature: every `input[data-sampling]`, named by its
// API parameter). Each shows the selected model's own default, from GET /v1/models `sampling_defaults`
// (models.yaml, else the checkpoint's generation_config.json, else the built-in), until the user types a value.
//
// Only the user's values are sent. A field left alone is left out of the request and the engine applies the
// model's default: defaults are resolved in one place (the engine, once per load), "max tokens: up to the
// context" needs no number, and a model whose defaults the page does not know (still loading, unreachable,
// changed since the page loaded) still gets its own. A value the user typed applies to every model until it
// is emptied or "Model defaults" drops them all.

const SOURCES = { "models.yaml": "models.yaml", "generation_config.json": "checkpoint", default: "built-in" };

export class SamplingFields {
  constructor(root) {
    this.inputs = [...root.querySelectorAll("input[data-sampling]")];
    this.model = undefined; // the /v1/models entry shown; undefined when unknown
    this.own = {}; // the user's values, API parameter -> number, as edited in the open dialog
    for (const input of this.inputs) {
      input.addEventListener("input", () => {
        const name = input.dataset.sampling;
        if (input.value === "") delete this.own[name]; // emptied: the model's default again
        else this.own[name] = Number(input.value);
        this.describe(input);
      });
    }
  }

  /** Show `model`'s defaults (a /v1/models entry, or undefined) under the user's values `own`. */
  show(model, own) {
    this.model = model;
    this.own = { ...own };
    for (const input of this.inputs) this.fill(input);
  }

  /** A fresher entry of the model shown (its defaults arrive once it has loaded); what the user typed stays. */
  refresh(model) {
    if (model?.id !== this.model?.id) return;
    this.model = model;
    for (const input of this.inputs) {
      if (input.dataset.sampling in this.own) this.describe(input);
      else this.fill(input);
    }
  }

  /** "Model defaults": drop the user's values. */
  reset() {
    this.own = {};
    for (const input of this.inputs) this.fill(input);
  }

  /** The user's values, to save and to send with each request. */
  values() {
    return { ...this.own };
  }

  fill(input) {
    const name = input.dataset.sampling;
    input.value = this.own[name] ?? this.model?.sampling_defaults?.[name] ?? "";
    this.describe(input);
  }

  /** The note under a field: whose value it shows and, for the model's, where it came from. */
  describe(input) {
    const name = input.dataset.sampling;
    const defaults = this.model?.sampling_defaults;
    const note = document.getElementById(input.getAttribute("aria-describedby"));
    const theirs = String(defaults?.[name] ?? input.dataset.unset ?? "model default");
    input.placeholder = defaults ? theirs : "model default";
    if (!defaults) {
      note.textContent = name in this.own ? "yours" : "model default (not known yet)";
    } else if (name in this.own) {
      note.textContent = `yours · the model's: ${theirs}`;
    } else {
      note.textContent = `model default · ${SOURCES[defaults.sources?.[name]] ?? "engine"}`;
    }
  }
}
