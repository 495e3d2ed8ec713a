function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
}

function render({ model, el }) {
  const root = node("div", "labkit-rank");
  root.tabIndex = 0;
  // Lumino (JupyterLab) skips its shortcuts for keys pressed inside this element;
  // without it, "a" and "b" would insert notebook cells instead of labelling.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const head = node("div", "labkit-head");
  const who = node("span", "labkit-who");
  const bar = node("progress", "labkit-progress");
  const count = node("span", "labkit-count");
  head.append(who, bar, count);
  const prompt = node("div", "labkit-prompt");
  const cards = node("div", "labkit-cards");
  const buttons = node("div", "labkit-buttons");
  const why = node("textarea", "labkit-why");
  why.placeholder = "Why? (optional, saved with the next label)";
  why.rows = 2;
  const msg = node("div", "labkit-msg");
  msg.setAttribute("role", "status");
  const help = node("div", "labkit-help");
  root.append(head, prompt, cards, buttons, why, msg, help);
  el.appendChild(root);

  const send = (key) => model.send({ key: key, unit: model.get("view").unit });

  root.addEventListener("keydown", (e) => {
    if (e.target === why || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (!(model.get("view").keys || []).includes(key)) return;
    e.preventDefault();
    e.stopPropagation();
    send(key);
  });
  why.addEventListener("input", () => {
    model.set("rationale", why.value);
    model.save_changes();
  });

  function button(label, key) {
    const b = node("button", "labkit-button", label + " (" + (key === "backspace" ? "\u232b" : key) + ")");
    b.type = "button";
    b.setAttribute("aria-keyshortcuts", key);
    b.addEventListener("click", () => send(key));
    return b;
  }

  function draw() {
    const v = model.get("view");
    const hadFocus = root.contains(document.activeElement) && document.activeElement !== why;
    who.textContent = "Annotator: " + v.annotator + " \u00b7 " + v.mode + " mode";
    bar.max = Math.max(v.total, 1);
    bar.value = v.done;
    count.textContent = v.done + " / " + v.total + " labelled";
    prompt.textContent = v.finished ? "" : v.prompt;
    prompt.hidden = v.finished;
    cards.replaceChildren(...v.candidates.map((c) => {
      const card = node("div", "labkit-card");
      const top = node("div", "labkit-card-head");
      top.append(node("b", "", c.title), node("span", "labkit-sub", c.subtitle || ""));
      if (c.key) {
        card.classList.add("labkit-pickable");
        if (c.subtitle) card.classList.add("labkit-picked");
        top.append(button("Pick " + c.key, c.key));
      }
      card.append(top, node("div", "labkit-text", c.text));
      return card;
    }));
    buttons.replaceChildren(...v.buttons.map((b) => button(b.label, b.key)));
    if (why.value !== model.get("rationale")) why.value = model.get("rationale");
    msg.textContent = v.message;
    help.textContent = v.help;
    // Redrawing replaced the focused button: keep the keyboard inside the widget.
    if (hadFocus && !root.contains(document.activeElement)) root.focus({ preventScroll: true });
  }

  const onRationale = () => {
    if (why.value !== model.get("rationale")) why.value = model.get("rationale");
  };
  model.on("change:view", draw);
  model.on("change:rationale", onRationale);
  draw();
  return () => {
    model.off("change:view", draw);
    model.off("change:rationale", onRationale);
  };
}

export default { render };
