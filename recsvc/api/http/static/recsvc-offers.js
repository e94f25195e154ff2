// <recsvc-offers customer-id="c00042" channel="call_center"> : the next-best offers for an
// agent's screen, served by recsvc's HTTP face. One file, no build step, nothing fetched from
// elsewhere. Attributes: customer-id (required), channel, limit (default 3), endpoint (base
// URL of the HTTP face; default: this page's origin), show ("p_accept,value,cost": which
// numbers to show), context (JSON object of live customer attributes, e.g. '{"intent":"cancel"}'),
// token (or set the `token` property from script: it then never appears in the page's HTML).
// Accept / Decline / Not now record accept / decline / impression through RecordFeedback with
// the answer's decision id, then the panel asks again without the offers already handled.
// An offer's optional display fields (offers table, or `recsvc offers set`) show when given:
// its description, its image (http(s) only, decorative: the title says what it is) and its own
// labels for the accept and decline buttons.
// Theme with CSS custom properties on the element: --recsvc-font, --recsvc-fg, --recsvc-bg,
// --recsvc-muted, --recsvc-border, --recsvc-accent, --recsvc-accent-fg, --recsvc-radius,
// --recsvc-warn-bg, --recsvc-image-size. Events: `recsvc-feedback` (detail: offerId, event,
// status) and `recsvc-state` (detail: state = loading | ready | empty | degraded | unavailable).
(() => {
  "use strict";
  const SERVICE = "/recsvc.v1.RetentionOfferService/";
  const REASONS = {
    personal_affinity: "Fits what this customer and similar customers accepted",
    popular_in_segment: "Popular with customers like this one",
    popular_overall: "Popular with all customers",
    retention_priority: "Chosen to keep this customer",
    exploration: "Shown to learn how customers respond",
    new_offer_prior: "A new offer",
    high_value: "High value for the customer",
    business_priority: "A current business priority",
    customer_rule_matched: "This customer meets the offer's conditions",
  };
  const DEGRADED = ["STRATEGY_DEGRADED_SEGMENT_POPULAR", "STRATEGY_DEGRADED_GLOBAL_POPULAR"];
  const CSS = `
:host { display: block; font: var(--recsvc-font, 14px/1.4 system-ui, sans-serif);
  color: var(--recsvc-fg, #1b1f24); }
.panel { background: var(--recsvc-bg, #fff); border: 1px solid var(--recsvc-border, #c9ced6);
  border-radius: var(--recsvc-radius, 8px); padding: 12px; }
h2 { font-size: 1em; margin: 0 0 8px; }
ul { list-style: none; margin: 0; padding: 0; }
li { border-top: 1px solid var(--recsvc-border, #c9ced6); padding: 10px 0; }
li:first-child { border-top: 0; }
h3 { font-size: 1.05em; margin: 0 0 4px; }
.offer { display: flex; gap: 10px; align-items: flex-start; }
.offer > .body { flex: 1; min-width: 0; }
.image { width: var(--recsvc-image-size, 64px); height: var(--recsvc-image-size, 64px);
  object-fit: cover; border-radius: var(--recsvc-radius, 8px); flex: none; }
.description { margin: 2px 0 4px; white-space: pre-line; }
h3:focus { outline: 2px solid var(--recsvc-accent, #0b5cad); outline-offset: 2px; }
.why { color: var(--recsvc-muted, #4a525c); margin: 2px 0; padding-left: 1.1em; list-style: disc; }
.why li { border: 0; padding: 0; }
.numbers { color: var(--recsvc-muted, #4a525c); margin: 4px 0; }
.actions { display: flex; gap: 8px; margin-top: 6px; flex-wrap: wrap; }
button { font: inherit; padding: 6px 12px; border-radius: var(--recsvc-radius, 8px);
  border: 1px solid var(--recsvc-accent, #0b5cad); background: transparent;
  color: var(--recsvc-accent, #0b5cad); cursor: pointer; }
button.accept { background: var(--recsvc-accent, #0b5cad); color: var(--recsvc-accent-fg, #fff); }
button:focus-visible { outline: 3px solid var(--recsvc-accent, #0b5cad); outline-offset: 2px; }
button:disabled { opacity: .6; cursor: wait; }
.notice { background: var(--recsvc-warn-bg, #fff4d6); border-radius: var(--recsvc-radius, 8px);
  padding: 8px; margin: 0 0 8px; }
.status { margin: 0; }
`;

  function eventId() {
    if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "ev-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  class RecsvcOffers extends HTMLElement {
    static get observedAttributes() {
      return ["customer-id", "channel", "limit", "context", "endpoint", "show"];
    }

    constructor() {
      super();
      this._root = this.attachShadow({ mode: "open" });
      this._root.append(el("style", { text: CSS }));
      this._panel = el("section", { class: "panel", role: "region",
        "aria-label": "Next best offers" });
      this._root.append(this._panel);
      this._handled = new Set();  // offers answered in this conversation: never shown again
      this._answer = null;
      this._seq = 0;
      this._token = null;
    }

    set token(value) { this._token = value; }
    get token() { return this._token ?? this.getAttribute("token") ?? ""; }

    connectedCallback() {
      // A `token` set before this script ran sits on the instance: move it behind the setter.
      if (Object.prototype.hasOwnProperty.call(this, "token")) {
        const value = this.token;
        delete this.token;
        this.token = value;
      }
      this._connected = true;
      this._schedule();
    }

    attributeChangedCallback(name, old, value) {
      if (old === value) return;
      if (name === "customer-id") this._handled.clear();
      if (this._connected) this._schedule();
    }

    _schedule() {  // several attributes changed at once: ask once
      if (this._pending) return;
      this._pending = true;
      queueMicrotask(() => { this._pending = false; this.refresh(); });
    }

    _base() { return (this.getAttribute("endpoint") || "").replace(/\/+$/, ""); }

    async _post(method, body) {
      const headers = { "content-type": "application/json" };
      if (this.token) headers.authorization = "Bearer " + this.token;
      const response = await fetch(this._base() + SERVICE + method, {
        method: "POST", headers, body: JSON.stringify(body) });
      let payload = null;
      try { payload = await response.json(); } catch (e) { payload = null; }
      if (!response.ok) {
        const error = new Error((payload && payload.message) || ("HTTP " + response.status));
        error.status = response.status;
        error.code = payload && payload.code;
        throw error;
      }
      return payload;
    }

    _state(state) {
      this.setAttribute("state", state);
      this.dispatchEvent(new CustomEvent("recsvc-state", { detail: { state }, bubbles: true }));
    }

    _status(text, role) {
      return el("p", { class: "status", role: role || "status", text });
    }

    async refresh() {
      const customer = this.getAttribute("customer-id");
      const seq = ++this._seq;
      this._panel.setAttribute("aria-busy", "true");
      if (!customer) {
        this._show([this._status("No customer selected.")], "empty");
        return;
      }
      this._state("loading");
      let context = {};
      try { context = JSON.parse(this.getAttribute("context") || "{}"); } catch (e) { context = {}; }
      const limit = parseInt(this.getAttribute("limit") || "3", 10) || 3;
      try {
        const answer = await this._post("Recommend", {
          customerId: customer, limit, channel: this.getAttribute("channel") || "",
          context, excludeOfferIds: [...this._handled] });
        if (seq !== this._seq) return;  // a newer refresh is under way
        this._answer = answer;
        this._render(answer);
      } catch (error) {
        if (seq !== this._seq) return;
        this._unavailable(error);
      }
    }

    _show(nodes, state) {
      this._panel.replaceChildren(el("h2", { text: "Next best offers" }), ...nodes);
      this._panel.removeAttribute("aria-busy");
      this._state(state);
    }

    _unavailable(error) {
      const why = error.status === 401 || error.status === 403
        ? "This page is not allowed to ask for offers (" + error.message + ")."
        : error.status ? "Offers are unavailable right now (" + error.message + ")."
          : "Offers are unavailable: the offer service cannot be reached.";
      const retry = el("button", { type: "button", text: "Try again",
        onclick: () => this.refresh() });
      this._show([el("div", { class: "notice", role: "alert" },
        el("p", { class: "status", text: why }), retry)], "unavailable");
    }

    _render(answer) {
      const offers = answer.offers || [];
      const nodes = [];
      const degraded = DEGRADED.includes(answer.strategy);
      if (degraded) {
        nodes.push(el("p", { class: "notice", role: "status", text:
          "Limited service: these are popular offers, not yet personal ones " +
          "(live customer data is unavailable)." }));
      }
      if (!offers.length) {
        nodes.push(this._status("No offer for this customer right now."));
        this._show(nodes, degraded ? "degraded" : "empty");
        return;
      }
      const show = new Set((this.getAttribute("show") || "p_accept").split(",")
        .map((s) => s.trim()).filter(Boolean));
      const list = el("ul", { "aria-label": "Offers" });
      offers.forEach((offer) => list.append(this._offer(offer, show)));
      nodes.push(list);
      this._show(nodes, degraded ? "degraded" : "ready");
    }

    _offer(offer, show) {
      const title = offer.title || offer.offerId;
      const heading = el("h3", { tabindex: "-1", text: title });
      const why = el("ul", { class: "why", "aria-label": "Why this offer" });
      for (const code of offer.reasons || []) {
        why.append(el("li", { text: REASONS[code] || code.replace(/_/g, " ") }));
      }
      const numbers = [];
      if (show.has("p_accept")) numbers.push(
        "Likely to accept: " + Math.round((offer.pAccept || 0) * 100) + "%");
      if (show.has("value")) numbers.push("Value: " + (offer.value || 0).toFixed(2));
      if (show.has("cost")) numbers.push("Cost: " + (offer.cost || 0).toFixed(2));
      const item = el("li", { class: "offer", "data-offer-id": offer.offerId,
        "aria-label": title });
      const button = (label, event, cls) => el("button", {
        type: "button", class: cls, text: label, "aria-label": label + ": " + title,
        onclick: (e) => this._feedback(offer, event, item, e.currentTarget) });
      let image = null;
      if (/^https?:\/\//i.test(offer.imageUrl || "")) {  // the server checks it too
        image = el("img", { class: "image", src: offer.imageUrl, alt: "", loading: "lazy",
          referrerpolicy: "no-referrer", onerror: () => image.remove() });
      }
      // el() drops absent children (the DOM's own append would write "null").
      const body = el("div", { class: "body" }, heading,
        offer.description ? el("p", { class: "description", text: offer.description }) : null,
        why.childElementCount ? why : null,
        numbers.length ? el("p", { class: "numbers", text: numbers.join(" · ") }) : null,
        el("div", { class: "actions", role: "group", "aria-label": "Respond to " + title },
          button(offer.acceptLabel || "Accept", "accept", "accept"),
          button(offer.declineLabel || "Decline", "decline", "decline"),
          button("Not now", "impression", "later")));
      item.append(...[image, body].filter(Boolean));
      return item;
    }

    async _feedback(offer, event, item, button) {
      const answer = this._answer;
      for (const b of item.querySelectorAll("button")) b.disabled = true;
      let status = "FEEDBACK_STATUS_RECORDED";
      try {
        const result = await this._post("RecordFeedback", { events: [{
          eventId: eventId(), customerId: answer.customerId, offerId: offer.offerId, event,
          decisionId: answer.decisionId || "", channel: this.getAttribute("channel") || "" }] });
        status = result.results[0].status;
        if (status === "FEEDBACK_STATUS_REJECTED") throw new Error(result.results[0].reason);
      } catch (error) {
        for (const b of item.querySelectorAll("button")) b.disabled = false;
        const note = el("p", { class: "notice", role: "alert",
          text: "Not recorded: " + error.message });
        item.append(note);
        button.focus();
        return;
      }
      this._handled.add(offer.offerId);
      this.dispatchEvent(new CustomEvent("recsvc-feedback", { bubbles: true,
        detail: { offerId: offer.offerId, event, status } }));
      await this.refresh();
      const next = this._root.querySelector("h3") || this._root.querySelector(".status");
      if (next) { next.setAttribute("tabindex", "-1"); next.focus(); }
    }
  }

  if (!customElements.get("recsvc-offers")) customElements.define("recsvc-offers", RecsvcOffers);
})();
