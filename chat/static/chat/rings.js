/*
 * Rings on the chat page: calls ringing this user, wherever they are on the page.
 *
 *   const rings = ChatRings.create({ config, onAccept, onDecline, busy, shownRoom, myCall });
 *   rings.take(event);   // {"type": "ring" | "ring_end", ...} from user.<me> (ephemeral)
 *   rings.load();        // GET /chat/api/calls?ringing=1: rings that began while away
 *   rings.state();       // {calls: [ids], shown: id|null, tone: bool, notified: [ids]}
 *
 * The server decides what rings: a ``ring`` event (chat/calls.py ``ring_data``) starts
 * one, a ``ring_end`` (answered, cancelled, timed out, declined on another page of this
 * user) stops it on every page. A ring also stops by itself after config.ringTimeoutS,
 * should its end be lost. While any ring is on and this user is not in a call, a
 * ringtone plays, made with Web Audio (no file to fetch), and when the tab is hidden a
 * browser Notification shows (once permission is given with the page's button).
 */
(function (global) {
  "use strict";

  // A phone's ring: 440 Hz + 480 Hz together, 1 s on, 2 s off (UK/US cadence, shortened).
  const TONE_HZ = [440, 480];
  const TONE_ON_MS = 1000;
  const TONE_CYCLE_MS = 3000;
  const TONE_GAIN = 0.08;

  function create({ config, onAccept, onDecline, busy, shownRoom, myCall }) {
    const el = (id) => document.getElementById(id);
    const rings = new Map(); // call id -> {ring, timer, notification}
    let tone = null; // {context, gain, oscillators, timer}

    function take(event) {
      if (!event || typeof event !== "object" || !Number.isInteger(event.call)) return;
      if (event.type === "ring") add(event);
      else if (event.type === "ring_end") end(event.call);
    }

    function add(ring) {
      if (rings.has(ring.call) || typeof ring.room !== "string") return;
      const entry = { ring, timer: null, notification: null };
      entry.timer = setTimeout(() => end(ring.call), config.ringTimeoutS * 1000);
      rings.set(ring.call, entry);
      notify(entry);
      render();
    }

    function end(callId) {
      const entry = rings.get(callId);
      if (!entry) return;
      clearTimeout(entry.timer);
      if (entry.notification) entry.notification.close();
      rings.delete(callId);
      render();
    }

    /** The rings of calls that started while this page was away (a reload, a reconnect). */
    async function load() {
      const answer = await fetch(`${config.callsUrl}?ringing=1`, { credentials: "same-origin" });
      if (!answer.ok) return;
      const { calls } = await answer.json();
      const now = new Set(calls.map((ring) => ring.call));
      for (const callId of Array.from(rings.keys())) if (!now.has(callId)) end(callId);
      calls.forEach(add);
    }

    function newest() {
      let found = null;
      for (const entry of rings.values()) found = entry; // a Map keeps the order of arrival
      return found;
    }

    function render() {
      const joined = myCall();
      if (joined !== null && rings.has(joined)) end(joined); // answered here: nothing rings for it
      const entry = newest();
      const banner = el("ring");
      // The room on screen shows its own call's Accept and Decline in the call panel.
      banner.hidden = !entry || (entry.ring.room === shownRoom() && !busy());
      if (entry) {
        const { ring } = entry;
        const who = ring.from ? ring.from.name : "someone";
        el("ring-text").textContent = ring.direct ? `${who} is calling` : `${who} is calling in ${ring.room_title}`;
        banner.dataset.call = String(ring.call);
        banner.dataset.room = ring.room;
      } else {
        delete banner.dataset.call;
        delete banner.dataset.room;
      }
      if (entry && !busy()) startTone();
      else stopTone();
      renderNotifyButton();
    }

    // --- the ringtone ------------------------------------------------------------------

    function startTone() {
      if (tone) return;
      const Context = global.AudioContext || global.webkitAudioContext;
      if (!Context) return;
      const context = new Context();
      const gain = context.createGain();
      gain.gain.value = 0;
      gain.connect(context.destination);
      const oscillators = TONE_HZ.map((hz) => {
        const oscillator = context.createOscillator();
        oscillator.frequency.value = hz;
        oscillator.connect(gain);
        oscillator.start();
        return oscillator;
      });
      const beat = () => {
        const at = context.currentTime;
        gain.gain.setValueAtTime(TONE_GAIN, at);
        gain.gain.setValueAtTime(0, at + TONE_ON_MS / 1000);
      };
      tone = { context, gain, oscillators, timer: setInterval(beat, TONE_CYCLE_MS) };
      beat();
      // A page nobody touched yet may not start audio: the first click does.
      if (context.state === "suspended") {
        document.addEventListener("click", () => tone && tone.context.resume(), { once: true });
      }
    }

    function stopTone() {
      if (!tone) return;
      clearInterval(tone.timer);
      tone.oscillators.forEach((oscillator) => oscillator.stop());
      tone.context.close();
      tone = null;
    }

    // --- notifications -----------------------------------------------------------------

    function notify(entry) {
      if (!document.hidden || !("Notification" in global) || global.Notification.permission !== "granted") return;
      const { ring } = entry;
      const who = ring.from ? ring.from.name : "someone";
      try {
        entry.notification = new global.Notification(`${who} is calling`, {
          body: ring.direct ? "Voice call" : `Voice call in ${ring.room_title}`,
          tag: `call-${ring.call}`,
          requireInteraction: true,
        });
        entry.notification.onclick = () => {
          global.focus();
          entry.notification.close();
        };
      } catch (error) {
        entry.notification = null; // a browser that only notifies from a service worker
      }
    }

    function renderNotifyButton() {
      const button = el("notify-enable");
      if (!button) return;
      button.hidden = !("Notification" in global) || global.Notification.permission !== "default";
    }

    function state() {
      const entry = newest();
      return {
        calls: Array.from(rings.keys()),
        shown: entry ? entry.ring.call : null,
        tone: Boolean(tone),
        toneState: tone ? tone.context.state : null,
        notified: Array.from(rings.values())
          .filter((item) => item.notification)
          .map((item) => item.ring.call),
      };
    }

    el("ring-accept").addEventListener("click", () => {
      const entry = newest();
      if (!entry) return;
      end(entry.ring.call);
      onAccept(entry.ring);
    });
    el("ring-decline").addEventListener("click", () => {
      const entry = newest();
      if (!entry) return;
      end(entry.ring.call);
      onDecline(entry.ring);
    });
    const notifyButton = el("notify-enable");
    if (notifyButton) {
      notifyButton.addEventListener("click", async () => {
        await global.Notification.requestPermission();
        renderNotifyButton();
      });
    }
    render();
    return { take, load, state, render };
  }

  global.ChatRings = { create };
})(globalThis);
