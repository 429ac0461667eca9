/*
 * push.js: the browser client of django-push's multiplexed endpoint ``ws/``.
 *
 * One file, no dependencies, no build step. It defines one global, PushClient:
 *
 *   const client = new PushClient();                  // ws(s)://<this host>/ws/
 *   client.on("state", (state) => ...);                // connecting|open|reconnecting|closed|failed
 *   client.on("error", (frame) => ...);                // {"op":"error","code":..,"msg":..,"topic"?}
 *   const stop = client.subscribe("dashboard.sales", (data, frame) => render(data), {
 *     onReset(frame) {},                               // continuity broke: drop what you hold
 *     onPresence(members) {}, onJoin(member) {}, onLeave(member) {},
 *     onEphemeral(data, frame) {},                     // not numbered, never replayed (typing)
 *   });
 *   stop();                                            // unsubscribe this handler
 *   client.close();                                    // for good; no reconnect
 *
 * What it guarantees to a handler: each message once, in seq order, across
 * reconnects. Per topic it keeps the position (last delivered seq, epoch) and
 * resubscribes with it after a reconnect, so the server replays what was missed
 * ("recovered": true) or says it cannot ("recovered": false, then a snapshot
 * marked "reset" on state-like topics). See docs/protocol.md.
 *
 * Options (all optional): minDelayMs 500, maxDelayMs 15000, factor 2,
 * pingIntervalMs 25000, maxRefusals 3, token (a string, or a function returning
 * one or a promise of one; sent as {"op": "auth", "token": ...} on each connect,
 * for pages without the session cookie). Also: client.members(topic),
 * client.isSubscribed(topic), client.publish(topic, data), client.reconnect(), client.state.
 *
 * States: "connecting" (the first connection), "open" (the socket is open),
 * "reconnecting" (lost; waiting or trying again), "closed" (client.close()),
 * "failed" (gave up, see below). A keepalive ping goes every pingIntervalMs; when
 * nothing at all came back by the next one, the link is taken for dead.
 *
 * Reconnecting: exponential backoff (minDelayMs x factor^n, capped at maxDelayMs)
 * with jitter (each delay drawn between half and all of it), reset once a
 * connection proves healthy: its first "subscribed", "authenticated" or "pong"
 * (not merely open: a server that accepts and then refuses must not be hammered).
 * Close codes:
 *   1012 restarting    the server process is going (a deploy; it closes its sockets
 *                      spread over PUSH_DRAIN_S): reconnect within minDelayMs (at a
 *                      random point) and resume, reaching another process, when the
 *                      connection was healthy; with backoff otherwise.
 *   4000 resync        reconnect at once (within minDelayMs / 4) and resume, when
 *                      the connection was healthy; with backoff otherwise. daphne
 *                      sends it instead of 1012 when it restarts.
 *   4429 rate limited  wait about maxDelayMs before the next try.
 *   4503 try again     Redis was away as the socket opened: reconnect with backoff.
 *   4001, 4003, 1008   refusals: retried (a token function is asked again each
 *                      time: tokens expire) until maxRefusals come in a row
 *                      without a healthy connection between; then the state
 *                      becomes "failed" and the client stops. reconnect() tries again.
 *   anything else      reconnect with backoff.
 * An error frame with code 4503 and "request": "subscribe" (Redis was away: nothing was
 * done) sends that topic's subscribe again after a backoff of its own (minDelayMs x
 * factor^n with jitter, capped at maxDelayMs), until it is answered; the socket stays.
 */
(function (global) {
  "use strict";

  const DEFAULTS = {
    minDelayMs: 500,
    maxDelayMs: 15000,
    factor: 2,
    pingIntervalMs: 25000,
    maxRefusals: 3,
    token: null,
  };

  // ws/protocol.py CloseCode
  const RESYNC = 4000;
  const SERVICE_RESTART = 1012;
  const RATE_LIMITED = 4429;
  const TRY_AGAIN = 4503;
  const REFUSALS = new Set([1008, 4001, 4003]);

  // How long to wait for the snapshot that may follow a "subscribed" frame
  // with "recovered": false before telling the page its history is gone.
  const RESET_NOTICE_MS = 250;

  function resolveUrl(url) {
    const target = new URL(url || "/ws/", global.location.href);
    if (target.protocol === "http:") target.protocol = "ws:";
    if (target.protocol === "https:") target.protocol = "wss:";
    return target.href;
  }

  function report(error) {
    // A page's handler threw: show it like an uncaught error, keep the client going.
    if (typeof global.reportError === "function") global.reportError(error);
    else console.error(error);
  }

  class PushClient {
    constructor(url, options) {
      if (url !== null && typeof url === "object") {
        options = url;
        url = undefined;
      }
      this.url = resolveUrl(url);
      this.options = Object.assign({}, DEFAULTS, options);
      this.state = "connecting";
      this._events = new Map(); // event name -> Set of functions
      this._topics = new Map(); // topic -> {topic, listeners, seq, epoch, pending, members}
      this._socket = null;
      this._ready = false; // open, token (if any) sent: subscribe frames may go
      this._healthy = false;
      this._attempt = 0;
      this._refusals = 0;
      this._retryTimer = null;
      this._pingTimer = null;
      this._awaitingPong = false;
      this._resetNotice = null;
      this._closed = false;
      this._onOnline = () => {
        if (this._retryTimer !== null) this.reconnect();
      };
      if (typeof global.addEventListener === "function") {
        global.addEventListener("online", this._onOnline);
      }
      // After the caller's synchronous code, so listeners it adds see "connecting".
      queueMicrotask(() => {
        if (this._closed) return;
        this._emit("state", this.state);
        this._open();
      });
    }

    // --- events ---------------------------------------------------------------------------

    /** Call ``fn`` on each ``event`` ("state" or "error"); returns a function that stops it. */
    on(event, fn) {
      if (!this._events.has(event)) this._events.set(event, new Set());
      this._events.get(event).add(fn);
      return () => this.off(event, fn);
    }

    off(event, fn) {
      const fns = this._events.get(event);
      if (fns) fns.delete(fn);
    }

    _emit(event, value) {
      const fns = this._events.get(event);
      if (!fns) return;
      for (const fn of Array.from(fns)) {
        try {
          fn(value);
        } catch (error) {
          report(error);
        }
      }
    }

    _setState(state) {
      if (this.state === state) return;
      this.state = state;
      this._emit("state", state);
    }

    // --- topics ---------------------------------------------------------------------------

    /**
     * Call ``handler(data, frame)`` for each message of ``topic``, once, in seq order.
     * Returns a function that unsubscribes this handler. Several handlers may share a
     * topic (and its one server subscription); one added to a topic already held gets
     * the messages after it, not the snapshot the first one got.
     */
    subscribe(topic, handler, callbacks) {
      if (typeof topic !== "string" || !topic) {
        throw new TypeError("PushClient.subscribe: topic must be a non-empty string");
      }
      if (typeof handler !== "function") {
        throw new TypeError("PushClient.subscribe: handler must be a function");
      }
      const listener = Object.assign({}, callbacks, { handler });
      let sub = this._topics.get(topic);
      if (!sub) {
        sub = {
          topic,
          listeners: new Set(),
          seq: null,
          epoch: null,
          pending: false,
          members: [],
          retries: 0, // subscribes answered 4503 in a row
          retryTimer: null,
        };
        this._topics.set(topic, sub);
        this._sendSubscribe(sub);
      }
      sub.listeners.add(listener);
      return () => {
        if (!sub.listeners.delete(listener) || sub.listeners.size > 0) return;
        if (this._topics.get(topic) !== sub) return;
        this._topics.delete(topic);
        this._send({ op: "unsubscribe", topic });
      };
    }

    /** Whether ``topic`` is subscribed and answered: what is pushed from now on arrives. */
    isSubscribed(topic) {
      const sub = this._topics.get(topic);
      return Boolean(sub && sub.seq !== null && !sub.pending);
    }

    /** The members present on ``topic`` (from presence, join and leave frames). */
    members(topic) {
      const sub = this._topics.get(topic);
      return sub ? sub.members.slice() : [];
    }

    /** Publish ``data`` to ``topic`` where the server allows it; false when not connected. */
    publish(topic, data) {
      return this._send({ op: "publish", topic, data });
    }

    /** Close for good: no reconnect. The state becomes "closed". */
    close() {
      this._closed = true;
      this._clearRetry();
      if (typeof global.removeEventListener === "function") {
        global.removeEventListener("online", this._onOnline);
      }
      const socket = this._teardown();
      if (socket) socket.close(1000);
      this._setState("closed");
    }

    /** Connect now: after "failed", or to skip the wait while "reconnecting". */
    reconnect() {
      if (this._closed || this._socket) return;
      this._clearRetry();
      this._attempt = 0;
      this._refusals = 0;
      this._setState("reconnecting");
      this._open();
    }

    // --- the socket -----------------------------------------------------------------------

    _open() {
      this._retryTimer = null;
      this._healthy = false;
      this._ready = false;
      this._awaitingPong = false;
      let socket;
      try {
        socket = new WebSocket(this.url);
      } catch (error) {
        // A URL the browser refuses: no retry can fix it.
        this._emit("error", { op: "error", code: null, msg: String(error) });
        this._setState("failed");
        return;
      }
      this._socket = socket;
      socket.onopen = () => {
        if (socket === this._socket) this._onOpen(socket);
      };
      socket.onmessage = (event) => {
        if (socket === this._socket) this._onText(event.data);
      };
      socket.onclose = (event) => {
        if (socket === this._socket) this._lost(event.code);
      };
      // An error event is always followed by a close event, which carries the code.
      socket.onerror = () => {};
    }

    _onOpen(socket) {
      this._setState("open");
      this._pingTimer = setInterval(() => this._keepalive(), this.options.pingIntervalMs);
      const token = this.options.token;
      if (token === null || token === undefined) {
        this._becomeReady();
        return;
      }
      Promise.resolve()
        .then(() => (typeof token === "function" ? token() : token))
        .then((value) => {
          if (socket !== this._socket) return;
          if (typeof value !== "string" || !value) {
            throw new TypeError("the token option gave no token");
          }
          socket.send(JSON.stringify({ op: "auth", token: value }));
          this._becomeReady();
        })
        .catch((error) => {
          if (socket !== this._socket) return;
          this._emit("error", { op: "error", code: null, msg: `no token: ${error.message}` });
          this._drop(4001); // counted as a refusal: without a token the server refuses anyway
        });
    }

    _becomeReady() {
      this._ready = true;
      for (const sub of this._topics.values()) this._sendSubscribe(sub);
      // Nothing to wait an answer for: the connection being up is all there is to check.
      if (this._topics.size === 0 && !this.options.token) this._markHealthy();
    }

    _send(frame) {
      const socket = this._socket;
      if (!socket || !this._ready || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(frame));
      return true;
    }

    _sendSubscribe(sub) {
      const frame = { op: "subscribe", topic: sub.topic };
      if (sub.seq !== null) {
        frame.since = sub.seq;
        frame.epoch = sub.epoch;
      }
      // Until its "subscribed" answer, the topic's messages are dropped: they are
      // covered by the replay (or the reset) that follows that answer.
      if (this._send(frame)) sub.pending = true;
    }

    _keepalive() {
      if (this._awaitingPong) {
        // Nothing at all came back in a whole interval: the link is dead (a laptop lid,
        // a dropped NAT mapping) even if the browser has not noticed yet.
        this._drop(null);
        return;
      }
      if (this._send({ op: "ping" })) this._awaitingPong = true;
    }

    _markHealthy() {
      if (this._healthy) return;
      this._healthy = true;
      this._attempt = 0;
      this._refusals = 0;
    }

    /** Forget the current socket (its events no longer reach us); return it. */
    _teardown() {
      clearInterval(this._pingTimer);
      this._pingTimer = null;
      this._flushResetNotice(null);
      const socket = this._socket;
      this._socket = null;
      this._ready = false;
      for (const sub of this._topics.values()) {
        sub.pending = false;
        clearTimeout(sub.retryTimer); // the next connection subscribes again anyway
        sub.retryTimer = null;
      }
      if (socket) {
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      }
      return socket;
    }

    /** Give up on the current socket ourselves, then handle it as a close with ``code``. */
    _drop(code) {
      const socket = this._teardown();
      if (socket) socket.close(1000);
      this._lost(code);
    }

    _lost(code) {
      const wasHealthy = this._healthy;
      this._teardown();
      if (this._closed) return;
      const { minDelayMs, maxDelayMs, factor, maxRefusals } = this.options;
      if (REFUSALS.has(code)) {
        this._refusals += 1;
        if (this._refusals >= maxRefusals) {
          this._setState("failed");
          return;
        }
      }
      let delay;
      if (code === RESYNC && wasHealthy) {
        delay = (Math.random() * minDelayMs) / 4;
      } else if (code === SERVICE_RESTART && wasHealthy) {
        // The server is going (a deploy) and spreads its closes: come back soon, elsewhere.
        delay = Math.random() * minDelayMs;
      } else if (code === RATE_LIMITED) {
        delay = maxDelayMs * (0.5 + Math.random() / 2);
        this._attempt += 1;
      } else {
        const capped = Math.min(maxDelayMs, minDelayMs * Math.pow(factor, this._attempt));
        delay = capped * (0.5 + Math.random() / 2);
        this._attempt += 1;
      }
      this._setState("reconnecting");
      this._retryTimer = setTimeout(() => this._open(), delay);
    }

    _clearRetry() {
      if (this._retryTimer !== null) clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }

    // --- frames from the server -----------------------------------------------------------

    _onText(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (error) {
        return; // not a frame of ours
      }
      if (frame === null || typeof frame !== "object") return;
      this._awaitingPong = false; // any frame shows the link is alive
      if (this._resetNotice) this._flushResetNotice(frame);
      switch (frame.op) {
        case "message":
          this._onMessage(frame);
          break;
        case "subscribed":
          this._onSubscribed(frame);
          break;
        case "presence":
        case "join":
        case "leave":
          this._onPresence(frame);
          break;
        case "ephemeral":
          this._onEphemeral(frame);
          break;
        case "error":
          if (frame.code === TRY_AGAIN && frame.request === "subscribe") this._retryLater(frame);
          this._emit("error", frame);
          break;
        case "pong":
        case "authenticated":
          this._markHealthy();
          break;
        default:
        // "unsubscribed", "published" and frames this version does not know: nothing to do.
      }
    }

    /** Redis was away when the server got this topic's subscribe: send it again, later. */
    _retryLater(frame) {
      const sub = this._topics.get(frame.topic);
      if (!sub || sub.retryTimer !== null) return;
      const { minDelayMs, maxDelayMs, factor } = this.options;
      const capped = Math.min(maxDelayMs, minDelayMs * Math.pow(factor, sub.retries));
      sub.retries += 1;
      const socket = this._socket;
      sub.retryTimer = setTimeout(() => {
        sub.retryTimer = null;
        if (socket === this._socket && this._topics.get(sub.topic) === sub) {
          this._sendSubscribe(sub);
        }
      }, capped * (0.5 + Math.random() / 2));
    }

    /*
     * Where a topic stands. ``sub.seq`` is the last seq delivered to the page (or the
     * position the server gave), ``sub.epoch`` the history it counts in. The server
     * sends "subscribed" in answer to a subscribe, and may send one unasked (after a
     * Redis outage or an epoch change) to say where the client stands; both are read
     * the same way:
     *
     * - no position yet (a new subscription): take (seq, epoch). What follows is a
     *   snapshot marked "reset" (state-like topics) and then seq + 1, seq + 2, ...
     * - same epoch, recovered: keep our position. The missed messages follow in order
     *   and are delivered by the usual rule (next seq only, duplicates dropped); if they
     *   do not start right after our position, that is a gap like any other.
     * - same epoch, not recovered: the messages in between are gone. Jump to seq; a
     *   snapshot may follow; the page is told (onReset).
     * - another epoch: the history was lost and its numbering restarted, so our seq
     *   means nothing there. Not recovered: jump to (seq, new epoch) as above.
     *   Recovered: we have seen nothing of the new history, so our position is
     *   (0, new epoch) and its messages are accepted from seq 1 on, in order; if what
     *   follows starts later, the gap rule asks again with since 0 in the new epoch,
     *   which the server answers with the whole new history or a reset.
     * - another epoch that "continues" ours (a Redis failover: the topic got a new epoch,
     *   and all we saw survived it): keep our seq, take the new epoch; the replay follows.
     */
    _onSubscribed(frame) {
      const sub = this._topics.get(frame.topic);
      if (!sub || !Number.isInteger(frame.seq) || typeof frame.epoch !== "string") return;
      this._markHealthy();
      sub.pending = false;
      sub.retries = 0;
      if (sub.seq === null) {
        sub.seq = frame.seq;
        sub.epoch = frame.epoch;
      } else if (frame.epoch !== sub.epoch && frame.recovered && frame.continues === sub.epoch) {
        sub.epoch = frame.epoch; // a failover renumbered the topic after what we hold: go on
      } else if (frame.epoch !== sub.epoch) {
        sub.epoch = frame.epoch;
        sub.seq = frame.recovered ? 0 : frame.seq;
        if (!frame.recovered) this._noticeReset(sub, frame);
      } else if (!frame.recovered) {
        sub.seq = frame.seq;
        this._noticeReset(sub, frame);
      }
    }

    _onMessage(frame) {
      const sub = this._topics.get(frame.topic);
      if (!sub || !Number.isInteger(frame.seq) || sub.pending || sub.seq === null) return;
      if (frame.reset === true) {
        // A snapshot instead of a replay: always delivered, and it is the position now.
        sub.seq = frame.seq;
        this._call(sub, "onReset", frame);
        this._deliver(sub, frame);
        return;
      }
      if (frame.seq <= sub.seq) return; // a duplicate (a replay overlapping live messages)
      if (frame.seq > sub.seq + 1) {
        // A gap: a message was lost on the way. Deliver nothing out of order; ask the
        // server to replay from our position (it answers "subscribed" then the messages).
        this._sendSubscribe(sub);
        return;
      }
      sub.seq = frame.seq;
      this._deliver(sub, frame);
    }

    /*
     * A "subscribed" frame with "recovered": false for a topic the page held: messages
     * were lost. On state-like topics the snapshot follows at once, marked "reset", and
     * its delivery calls onReset. On other topics nothing follows, so onReset is called
     * with the "subscribed" frame itself: when the next frame is not that snapshot, or
     * after RESET_NOTICE_MS, or when the socket goes.
     */
    _noticeReset(sub, frame) {
      this._flushResetNotice(null);
      const timer = setTimeout(() => this._flushResetNotice(null), RESET_NOTICE_MS);
      this._resetNotice = { sub, frame, timer };
    }

    _flushResetNotice(next) {
      const notice = this._resetNotice;
      if (!notice) return;
      this._resetNotice = null;
      clearTimeout(notice.timer);
      const snapshotFollows =
        next && next.op === "message" && next.reset === true && next.topic === notice.sub.topic;
      if (!snapshotFollows && this._topics.get(notice.sub.topic) === notice.sub) {
        this._call(notice.sub, "onReset", notice.frame);
      }
    }

    _onPresence(frame) {
      const sub = this._topics.get(frame.topic);
      if (!sub) return;
      if (frame.op === "presence") {
        if (!Array.isArray(frame.members)) return;
        sub.members = frame.members.slice();
        this._call(sub, "onPresence", sub.members.slice());
        return;
      }
      const member = frame.member;
      if (member === null || typeof member !== "object") return;
      sub.members = sub.members.filter((known) => known.id !== member.id);
      if (frame.op === "join") {
        sub.members.push(member);
        this._call(sub, "onJoin", member);
      } else {
        this._call(sub, "onLeave", member);
      }
    }

    // An ephemeral event (someone is typing): outside the seq order, for the moment only.
    _onEphemeral(frame) {
      const sub = this._topics.get(frame.topic);
      if (!sub) return;
      for (const listener of Array.from(sub.listeners)) {
        if (typeof listener.onEphemeral !== "function") continue;
        try {
          listener.onEphemeral(frame.data, frame);
        } catch (error) {
          report(error);
        }
      }
    }

    _deliver(sub, frame) {
      for (const listener of Array.from(sub.listeners)) {
        try {
          listener.handler(frame.data, frame);
        } catch (error) {
          report(error);
        }
      }
    }

    _call(sub, name, value) {
      for (const listener of Array.from(sub.listeners)) {
        if (typeof listener[name] !== "function") continue;
        try {
          listener[name](value);
        } catch (error) {
          report(error);
        }
      }
    }
  }

  global.PushClient = PushClient;
})(globalThis);
