// The browser side of every explorer (labkit/explore.py). Python owns the logic and sends a
// `view`; this draws it and sends back only actions. Model text goes through textContent only.

function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = String(text);
  return n;
}

// A token as it reads on a chip: line breaks and tabs made visible, an empty one marked.
function visible(text) {
  if (text === "") return "\u2205";
  return String(text).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

// heat in [-1, 1]: red where the first model likes the token more, blue where less.
function chipColor(chip) {
  if (typeof chip.heat === "number") {
    const a = Math.min(1, Math.abs(chip.heat)) * 0.75;
    return chip.heat >= 0 ? `rgba(214, 39, 40, ${a})` : `rgba(31, 119, 180, ${a})`;
  }
  if (typeof chip.hue === "number") return `hsl(${(chip.hue * 67) % 360}, 70%, 84%)`;
  return "";
}

function render({ model, el }) {
  const root = node("div", "lx-root");
  root.tabIndex = 0;
  // Lumino (JupyterLab) skips its shortcuts for keys pressed inside this element;
  // without it, "a" and "b" would insert notebook cells instead of voting in the arena.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const title = node("div", "lx-title");
  const controls = node("div", "lx-controls");
  const msg = node("div", "lx-msg");
  msg.setAttribute("role", "status");
  const body = node("div", "lx-body");
  const help = node("div", "lx-help");
  root.append(title, controls, msg, body, help);
  el.appendChild(root);

  const inputs = new Map(); // control id -> {wrap, input, name, type, sig}
  const send = (m) => model.send(m);
  const typing = (t) => t && ["TEXTAREA", "INPUT", "SELECT"].includes(t.tagName);

  root.addEventListener("keydown", (e) => {
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const v = model.get("view");
    const key = e.key.toLowerCase();
    if (!(v.keys || []).includes(key)) return;
    e.preventDefault();
    e.stopPropagation();
    send({ action: "key", key: key, token: v.token });
  });

  function makeControl(c) {
    if (c.type === "button") {
      const b = node("button", "lx-button");
      b.type = "button";
      b.addEventListener("click", () => {
        root.classList.add("lx-busy");
        msg.textContent = "Working\u2026";
        msg.classList.remove("lx-error");
        send({ action: "click", id: c.id, token: model.get("view").token });
      });
      return { wrap: b, input: b, type: c.type };
    }
    const wrap = node("label", "lx-control lx-control-" + c.type);
    const name = node("span", "lx-label");
    const input = node(c.type === "textarea" ? "textarea" : c.type === "select" ? "select" : "input", "lx-input");
    if (c.type === "number") input.type = "number";
    if (c.type === "text") input.type = "text";
    input.dataset.id = c.id;
    input.spellcheck = false;
    const event = c.type === "select" || c.type === "number" ? "change" : "input";
    input.addEventListener(event, () => send({ action: "set", id: c.id, value: input.value }));
    wrap.append(name, input);
    return { wrap, input, name, type: c.type };
  }

  function updateControl(entry, c) {
    const input = entry.input;
    if (c.type === "button") {
      input.textContent = c.label + (c.key ? " (" + c.key + ")" : "");
      if (c.key) input.setAttribute("aria-keyshortcuts", c.key);
      input.disabled = !!c.disabled;
      return;
    }
    entry.name.textContent = c.label;
    if (c.type === "select") {
      const sig = JSON.stringify(c.options);
      if (entry.sig !== sig) {
        input.replaceChildren(...c.options.map(([value, label]) => {
          const o = node("option", "", label);
          o.value = value;
          return o;
        }));
        entry.sig = sig;
      }
    }
    if (c.type === "number") Object.assign(input, { min: c.min, max: c.max, step: c.step });
    if (c.type === "textarea") input.rows = c.rows || 3;
    const value = c.value === undefined || c.value === null ? "" : String(c.value);
    // Never overwrite what the person is typing: the kernel's echo of it may lag a keystroke behind.
    if (document.activeElement !== input && input.value !== value) input.value = value;
  }

  function control(c) {
    let entry = inputs.get(c.id);
    if (!entry || entry.type !== c.type) {
      if (entry) entry.wrap.remove();
      entry = makeControl(c);
      inputs.set(c.id, entry);
    }
    updateControl(entry, c);
    return entry.wrap;
  }

  // A title in bold and a grey note after it.
  function heading(cls, title, sub) {
    const head = node("div", cls);
    head.append(node("b", "", title), node("span", "lx-sub", sub || ""));
    return head;
  }

  function cards(s) {
    const row = node("div", "lx-cards");
    for (const c of s.cards) {
      const card = node("div", "lx-card");
      card.append(heading("lx-card-head", c.title, c.subtitle));
      for (const item of c.items || []) {
        const it = node("div", "lx-item");
        const text = node("div", "lx-text", item.text);
        if (item.text === "") text.classList.add("lx-empty");
        const badges = node("div", "lx-badges");
        for (const b of item.badges || []) badges.append(node("span", "lx-badge lx-tone-" + (b.tone || "info"), b.text));
        it.append(text, badges);
        card.append(it);
      }
      row.append(card);
    }
    return row;
  }

  function table(s) {
    const t = node("table", "lx-table");
    const head = node("tr");
    for (const c of s.columns) head.append(node("th", "", c));
    const thead = node("thead");
    thead.append(head);
    const tbody = node("tbody");
    for (const r of s.rows) {
      const tr = node("tr");
      for (const cell of r) tr.append(node("td", "", cell));
      tbody.append(tr);
    }
    t.append(thead, tbody);
    return t;
  }

  function tokens(s) {
    const box = node("div", "lx-token-rows");
    for (const r of s.rows) {
      const row = node("div", "lx-token-row");
      const head = heading("lx-row-head", r.label, r.note);
      const chips = node("div", "lx-chips");
      const detail = node("div", "lx-detail", r.detail || "Hover over a token.");
      r.chips.forEach((c, i) => {
        const chip = node("span", "lx-chip", visible(c.text));
        chip.style.background = chipColor(c);
        chip.tabIndex = 0;
        chip.dataset.i = String(i);
        const show = () => {
          detail.textContent = c.detail;
          for (const o of chips.children) o.classList.toggle("lx-chip-on", o === chip);
        };
        chip.addEventListener("mouseenter", show);
        chip.addEventListener("focus", show);
        chips.append(chip);
      });
      row.append(head, chips, detail);
      box.append(row);
    }
    return box;
  }

  function section(s) {
    const box = node("div", "lx-section lx-section-" + s.type);
    if (s.title) box.append(node("div", "lx-section-title", s.title));
    if (s.type === "cards") box.append(cards(s));
    else if (s.type === "table") box.append(table(s));
    else if (s.type === "tokens") box.append(tokens(s));
    else box.append(node("p", "lx-para", s.text));
    return box;
  }

  function draw() {
    const v = model.get("view");
    root.className = "lx-root lx-kind-" + v.kind;
    title.textContent = v.title;
    const seen = new Set();
    const wanted = (v.controls || []).map((c) => {
      seen.add(c.id);
      return control(c);
    });
    for (const [id, entry] of inputs) {
      if (!seen.has(id)) {
        entry.wrap.remove();
        inputs.delete(id);
      }
    }
    // Re-inserting a node drops its focus: only rebuild the row when the controls changed.
    const same = wanted.length === controls.children.length && wanted.every((w, i) => controls.children[i] === w);
    if (!same) controls.replaceChildren(...wanted);
    msg.textContent = v.message || "";
    msg.classList.toggle("lx-error", !!v.error);
    body.replaceChildren(...(v.sections || []).map(section));
    help.textContent = v.help || "";
  }

  model.on("change:view", draw);
  draw();
  return () => model.off("change:view", draw);
}

export default { render };
