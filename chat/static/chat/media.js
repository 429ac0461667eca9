/*
 * The microphone side of a voice call (chat/static/chat/calls.js uses it): which
 * microphone and speaker, echo cancellation and noise suppression, who is
 * speaking, and a hint when you speak while muted.
 *
 *   const media = ChatMedia.create({ current: () => mine });  // mine: {stream, peers, muted, joining}
 *   const stream = await media.getUserMedia();  // the remembered microphone and switches
 *   media.started();            // mine.stream is set: meter it, follow its device
 *   media.attach(audio);        // a peer's <audio>: play it on the chosen speaker
 *   media.isSpeaking(peerId);   // what the peer's chip shows (data-speaking)
 *   media.levels();             // {peerId: audio level 0..1}, last poll
 *   media.devices();            // the track sent to each peer, the speaker of each, the choices
 *   media.stopped();            // the call is over for this page
 *
 * Choices are remembered per browser (localStorage ``chat.media``): the microphone
 * (used on the next join too), the speaker, and the two switches (on by default).
 * Changing the microphone or a switch in a call acquires a new track and puts it on
 * every peer connection with ``RTCRtpSender.replaceTrack``: no renegotiation, no
 * new offer; the old track is stopped. A microphone that goes away (its track
 * ends, or ``devicechange`` no longer lists it) is replaced by the default one, with
 * a message; when the chosen one is back, the call goes back to it.
 *
 * Speaking: every POLL_MS, each peer's audio level from its receiver's
 * ``getSynchronizationSources()`` (the level the sender's browser put in each RTP
 * packet); at SPEAKING_LEVEL or more the peer is speaking, and stays so until it
 * has been quieter for SPEAKING_HOLD_MS (speech has short pauses). The local
 * microphone is measured the same way with Web Audio, on a clone of the track that
 * stays enabled while the sent one is disabled (muted): speaking while muted shows
 * "You are muted".
 */
(function (global) {
  "use strict";

  const POLL_MS = 200;
  const SPEAKING_LEVEL = 0.02; // linear, 0..1 (about -34 dBov)
  const SPEAKING_HOLD_MS = 800;
  const SOURCE_STALE_MS = 1000; // a receiver's level older than this is no level
  const PREFS_KEY = "chat.media";
  const MUTE_KEY = "chat.call.muted"; // sessionStorage: muted in which call, for a reload
  const RETIRED_KEPT = 5;

  function loadPrefs() {
    const prefs = { mic: null, speaker: null, echoCancellation: true, noiseSuppression: true };
    try {
      const saved = JSON.parse(global.localStorage.getItem(PREFS_KEY) || "null");
      if (saved && typeof saved === "object") {
        if (typeof saved.mic === "string") prefs.mic = saved.mic;
        if (typeof saved.speaker === "string") prefs.speaker = saved.speaker;
        if (typeof saved.echoCancellation === "boolean") prefs.echoCancellation = saved.echoCancellation;
        if (typeof saved.noiseSuppression === "boolean") prefs.noiseSuppression = saved.noiseSuppression;
      }
    } catch (error) {
      // unreadable or refused: the defaults
    }
    return prefs;
  }

  function savePrefs(prefs) {
    try {
      global.localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
    } catch (error) {
      // storage refused (privacy mode): the choice lasts as long as the page
    }
  }

  /** On at ``SPEAKING_LEVEL``, off once quieter than that for ``SPEAKING_HOLD_MS``. */
  function speakingDetector() {
    let loudAt = -Infinity;
    return (level, now) => {
      if (level >= SPEAKING_LEVEL) loudAt = now;
      return now - loudAt < SPEAKING_HOLD_MS;
    };
  }

  function describe(track) {
    if (!track) return null;
    const settings = typeof track.getSettings === "function" ? track.getSettings() : {};
    return {
      id: track.id,
      label: track.label,
      deviceId: settings.deviceId || null,
      readyState: track.readyState,
      enabled: track.enabled,
      echoCancellation: settings.echoCancellation,
      noiseSuppression: settings.noiseSuppression,
    };
  }

  function create({ current }) {
    const el = (id) => document.getElementById(id);
    const devices = navigator.mediaDevices;
    const prefs = loadPrefs();
    const canPickSpeaker = typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;
    const peerLevels = new Map(); // peerId -> {level, speaking, detect}
    let meter = null; // {context, clone, analyser, buffer, detect, level, speaking}
    let inputs = []; // audioinput MediaDeviceInfo, last enumerated
    let outputs = [];
    let fallback = false; // sending another microphone than the chosen one, which went away
    const endedTracks = new WeakSet(); // tracks whose device went ("ended")
    let switching = Promise.resolve(); // track changes, one at a time
    let retired = []; // tracks taken off the call, newest last: {label, deviceId, readyState}
    let pollTimer = null;

    /** The call's tracks as they are while it is on: null before the stream, after the end. */
    function call() {
      const mine = current();
      return mine && mine.stream ? mine : null;
    }

    function sentTrack() {
      const mine = call();
      return mine ? mine.stream.getAudioTracks()[0] || null : null;
    }

    function constraints(deviceId, exact) {
      const audio = {
        echoCancellation: prefs.echoCancellation,
        noiseSuppression: prefs.noiseSuppression,
      };
      if (deviceId) audio.deviceId = exact ? { exact: deviceId } : { ideal: deviceId };
      return { audio, video: false };
    }

    /** The call's microphone: the one chosen last in this browser if it is there. */
    function getUserMedia() {
      if (!devices) return Promise.reject(new Error("this page may not use a microphone (it needs https)"));
      return devices.getUserMedia(constraints(prefs.mic, false));
    }

    /** The call's stream is set (``current().stream``): mute it as the call says, meter it. */
    function started() {
      const mine = call();
      if (!mine) return;
      for (const track of mine.stream.getAudioTracks()) {
        track.enabled = !mine.muted;
        followTrack(track);
      }
      const track = sentTrack();
      // The chosen microphone was not there when the call started: back on it when it is.
      fallback = Boolean(prefs.mic && track && describe(track).deviceId !== prefs.mic);
      note("");
      startMeter(track);
      if (pollTimer === null) pollTimer = setInterval(poll, POLL_MS);
      refreshDevices();
    }

    function stopped() {
      clearInterval(pollTimer);
      pollTimer = null;
      stopMeter();
      peerLevels.clear();
      fallback = false;
      showHint(false);
      refreshDevices();
    }

    /** A peer's <audio>: on the chosen speaker. */
    function attach(audio) {
      if (canPickSpeaker && prefs.speaker) audio.setSinkId(prefs.speaker).catch(() => {});
    }

    // --- muted: remembered for a reload of this tab -------------------------------------

    function muteChanged(muted, callId) {
      try {
        global.sessionStorage.setItem(MUTE_KEY, JSON.stringify({ call: callId, muted }));
      } catch (error) {
        // storage refused: a reload then starts unmuted
      }
      if (!muted) showHint(false);
    }

    function rememberedMute(callId) {
      try {
        const saved = JSON.parse(global.sessionStorage.getItem(MUTE_KEY) || "null");
        return Boolean(saved && saved.call === callId && saved.muted === true);
      } catch (error) {
        return false;
      }
    }

    // --- levels: each peer's, and my own microphone's ---------------------------------

    function startMeter(track) {
      stopMeter();
      if (!track || typeof global.AudioContext !== "function") return;
      try {
        const context = new global.AudioContext();
        const clone = track.clone();
        clone.enabled = true; // measured even while the sent track is disabled (muted)
        const analyser = context.createAnalyser();
        analyser.fftSize = 2048;
        context.createMediaStreamSource(new MediaStream([clone])).connect(analyser);
        meter = { context, clone, analyser, buffer: new Float32Array(analyser.fftSize), detect: speakingDetector() };
        meter.level = 0;
        meter.speaking = false;
        // Without a gesture first (a reload) the context may wait for one.
        if (context.state === "suspended") {
          document.addEventListener("click", () => context.resume().catch(() => {}), { once: true });
          context.resume().catch(() => {});
        }
      } catch (error) {
        meter = null; // no Web Audio: no "You are muted" hint
      }
    }

    function stopMeter() {
      if (!meter) return;
      meter.clone.stop();
      meter.context.close().catch(() => {});
      meter = null;
    }

    function micLevel() {
      if (!meter) return 0;
      meter.analyser.getFloatTimeDomainData(meter.buffer);
      let sum = 0;
      for (const sample of meter.buffer) sum += sample * sample;
      return Math.sqrt(sum / meter.buffer.length);
    }

    function receiverLevel(pc) {
      const now = performance.timeOrigin + performance.now();
      let level = 0;
      for (const receiver of pc.getReceivers()) {
        if (!receiver.track || receiver.track.kind !== "audio") continue;
        if (typeof receiver.getSynchronizationSources !== "function") continue;
        for (const source of receiver.getSynchronizationSources()) {
          if (now - source.timestamp > SOURCE_STALE_MS) continue; // nothing heard lately
          level = Math.max(level, source.audioLevel || 0);
        }
      }
      return level;
    }

    function poll() {
      const mine = call();
      if (!mine) return;
      const now = performance.now();
      for (const peerId of peerLevels.keys()) if (!mine.peers.has(peerId)) peerLevels.delete(peerId);
      for (const [peerId, peer] of mine.peers) {
        let entry = peerLevels.get(peerId);
        if (!entry) {
          entry = { level: 0, speaking: false, detect: speakingDetector() };
          peerLevels.set(peerId, entry);
        }
        entry.level = peer.pc.signalingState === "closed" ? 0 : receiverLevel(peer.pc);
        const speaking = entry.detect(entry.level, now);
        if (speaking !== entry.speaking) {
          entry.speaking = speaking;
          showSpeaking(peerId);
        }
      }
      if (meter) {
        meter.level = micLevel();
        meter.speaking = meter.detect(meter.level, now);
      }
      showHint(Boolean(mine.muted && !mine.joining && meter && meter.speaking));
    }

    function isSpeaking(peerId) {
      const entry = peerLevels.get(peerId);
      return Boolean(entry && entry.speaking);
    }

    /** Between two renders of the chips, the poll sets data-speaking on the peer's own. */
    function showSpeaking(peerId) {
      const chip = el("call-peers").querySelector(`li[data-id="${peerId}"]`);
      if (chip) chip.dataset.speaking = String(chip.dataset.muted !== "true" && isSpeaking(peerId));
    }

    function levels() {
      const figures = {};
      for (const [peerId, entry] of peerLevels) figures[peerId] = entry.level;
      return figures;
    }

    function showHint(visible) {
      const hint = el("call-muted-hint");
      if (hint.hidden === !visible) return;
      hint.hidden = !visible;
    }

    function note(text) {
      el("call-media-note").textContent = text;
    }

    // --- the pickers -------------------------------------------------------------------

    async function refreshDevices(follow = true) {
      if (!devices) return;
      let found;
      try {
        found = await devices.enumerateDevices();
      } catch (error) {
        return;
      }
      inputs = found.filter((device) => device.kind === "audioinput");
      outputs = found.filter((device) => device.kind === "audiooutput");
      const track = sentTrack();
      const sending = track && track.readyState === "live" ? describe(track).deviceId : null;
      fillSelect(el("call-mic"), inputs, sending || prefs.mic, "Microphone");
      el("call-speaker-pick").hidden = !canPickSpeaker;
      if (canPickSpeaker) fillSelect(el("call-speaker"), outputs, prefs.speaker, "Speaker");
      if (follow) await followDevices();
    }

    function fillSelect(select, list, selected, noun) {
      const options = list.map((device, index) => {
        const option = document.createElement("option");
        option.value = device.deviceId;
        // Labels come once the page may use the microphone.
        option.textContent = device.label || (device.deviceId ? `${noun} ${index + 1}` : `Default ${noun.toLowerCase()}`);
        return option;
      });
      select.replaceChildren(...options);
      if (selected && list.some((device) => device.deviceId === selected)) select.value = selected;
    }

    /** A device list changed: the microphone sent may be gone, or the chosen one back. */
    async function followDevices() {
      const track = sentTrack();
      if (!track) return;
      const listed = (id) => inputs.some((device) => device.deviceId === id);
      const sending = describe(track).deviceId;
      if (track.readyState === "ended" || endedTracks.has(track) || (sending && inputs.length && !listed(sending))) {
        await recover(track);
      } else if (fallback && prefs.mic && listed(prefs.mic)) {
        const label = inputs.find((device) => device.deviceId === prefs.mic).label;
        await useMic(prefs.mic, `Back on your microphone${label ? ` (${label})` : ""}`);
      }
    }

    /** The microphone sent went away: the chosen one if it is still there, else the default. */
    async function recover(gone) {
      const chosen = prefs.mic && inputs.some((device) => device.deviceId === prefs.mic) ? prefs.mic : null;
      const goneLabel = gone.label || "Your microphone";
      try {
        const track = await replaceMic(chosen, Boolean(chosen), gone);
        if (!track) return;
        fallback = Boolean(prefs.mic) && chosen !== prefs.mic;
        note(`${goneLabel} is gone: now using ${track.label || "the default microphone"}`);
      } catch (error) {
        note(`${goneLabel} is gone and no other microphone answers: the others cannot hear you`);
      }
    }

    async function useMic(deviceId, message = "") {
      try {
        const track = await replaceMic(deviceId, true);
        if (!track) return;
        fallback = Boolean(prefs.mic) && deviceId !== prefs.mic;
        note(message);
      } catch (error) {
        note(`Could not use that microphone: ${error.message || error.name}`);
        refreshDevices(false);
      }
    }

    /**
     * A new track from ``deviceId`` (the default without one) put on every peer
     * connection with ``replaceTrack``, and in the call's stream for connections made
     * later; the old one stopped. One change at a time; with ``replacing``, only if
     * that is still the track sent (a lost microphone is replaced once).
     */
    function replaceMic(deviceId, exact, replacing = null) {
      const change = switching.then(async () => {
        const mine = call();
        if (!mine || (replacing && sentTrack() !== replacing)) return null;
        const stream = await devices.getUserMedia(constraints(deviceId, exact));
        const track = stream.getAudioTracks()[0];
        if (call() !== mine) {
          track.stop(); // the call ended meanwhile
          return null;
        }
        const old = mine.stream.getAudioTracks();
        track.enabled = !mine.muted;
        mine.stream.addTrack(track);
        for (const gone of old) mine.stream.removeTrack(gone);
        const senders = [];
        for (const peer of mine.peers.values()) {
          if (peer.pc.signalingState === "closed") continue;
          for (const sender of peer.pc.getSenders()) {
            if (sender.track && sender.track.kind === "audio") senders.push(sender);
          }
        }
        await Promise.all(senders.map((sender) => sender.replaceTrack(track).catch(() => {})));
        for (const gone of old) {
          gone.stop();
          retired = retired.concat([describe(gone)]).slice(-RETIRED_KEPT);
        }
        followTrack(track);
        startMeter(track);
        return track;
      });
      switching = change.catch(() => {});
      return change.finally(() => refreshDevices(false));
    }

    function followTrack(track) {
      track.addEventListener("ended", () => {
        // The device went (unplugged, taken by the system): the list says what is left.
        endedTracks.add(track);
        refreshDevices();
      });
    }

    el("call-mic").addEventListener("change", (event) => {
      prefs.mic = event.target.value || null;
      savePrefs(prefs);
      if (call()) useMic(prefs.mic);
    });

    el("call-speaker").addEventListener("change", (event) => {
      prefs.speaker = event.target.value || null;
      savePrefs(prefs);
      const mine = call();
      if (!mine || !canPickSpeaker) return;
      for (const peer of mine.peers.values()) {
        peer.audio.setSinkId(prefs.speaker || "").catch((error) => note(`Speaker: ${error.message || error.name}`));
      }
    });

    for (const [id, name] of [
      ["call-echo", "echoCancellation"],
      ["call-noise", "noiseSuppression"],
    ]) {
      el(id).checked = prefs[name];
      el(id).addEventListener("change", (event) => {
        prefs[name] = event.target.checked;
        savePrefs(prefs);
        const track = sentTrack();
        // A new track with the new processing, from the same microphone.
        if (track) useMic(describe(track).deviceId || prefs.mic);
      });
    }

    if (devices) devices.addEventListener("devicechange", () => refreshDevices());
    refreshDevices();

    /** For tests and the console: what is sent to each peer, and where each is played. */
    function listDevices() {
      const mine = call();
      const senders = {};
      const sinks = {};
      if (mine) {
        for (const [peerId, peer] of mine.peers) {
          const sender = peer.pc.getSenders().find((s) => s.track && s.track.kind === "audio");
          senders[peerId] = describe(sender ? sender.track : null);
          sinks[peerId] = canPickSpeaker ? peer.audio.sinkId : null;
        }
      }
      return {
        mic: describe(sentTrack()),
        senders,
        sinks,
        retired: retired.slice(),
        chosen: { ...prefs },
        fallback,
        canPickSpeaker,
        micLevel: meter ? meter.level : null,
        inputs: inputs.map((device) => ({ deviceId: device.deviceId, label: device.label })),
        outputs: outputs.map((device) => ({ deviceId: device.deviceId, label: device.label })),
      };
    }

    return {
      getUserMedia,
      started,
      stopped,
      attach,
      muteChanged,
      rememberedMute,
      isSpeaking,
      levels,
      devices: listDevices,
    };
  }

  global.ChatMedia = { create, SPEAKING_LEVEL, SPEAKING_HOLD_MS, POLL_MS };
})(globalThis);
