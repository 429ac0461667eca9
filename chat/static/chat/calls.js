/*
 * Voice calls on the chat page: the call panel and the WebRTC mesh behind it.
 *
 *   const calls = ChatCalls.create({ client, config, onOpenRoom });
 *   calls.watch(room);        // the room shown: its call.<room> line
 *   await calls.stats();      // {peerId: {state, bytesReceived, bytesSent}}
 *
 * The server runs the call (chat/calls.py): a ``call.state`` push on
 * ``call.<room>`` says who is in it and, on a join, whom the newcomer offers to
 * (``offer_to``); everyone else waits for the newcomer's offer, so two peers
 * never offer to each other at once. Offers, answers and ICE candidates go
 * through the server to one participant's ``user.<id>`` topic; the audio goes
 * browser to browser. This file only follows what the server says: a peer
 * connection is opened for each participant the server names and closed when
 * a push no longer lists them.
 *
 * ICE candidates are sent in batches ({"type": "ice", "candidates": [...]}),
 * one frame per peer every ICE_BATCH_MS (up to 32 candidates each): a socket may
 * send 20 frames/s.
 */
(function (global) {
  "use strict";

  const ICE_BATCH_MS = 40;
  const ICE_BATCH_MAX = 32; // chat/calls.py MAX_ICE_BATCH
  const STATS_EVERY_MS = 1000;
  const REASONS = {
    cancelled: "the caller hung up",
    declined: "declined",
    unanswered: "nobody answered",
    hung_up: "call ended",
    disconnected: "the other side left",
  };

  function create({ client, config, onOpenRoom }) {
    const el = (id) => document.getElementById(id);
    const me = config.user.id;
    const watched = new Map(); // slug -> {room, stop, state}
    let shown = null; // slug of the room on screen
    let mine = null; // {slug, callId, joining, stream, peers: Map(id -> Peer), muted}
    let iceConfig = null; // {iceServers, expires_at}
    let ringTimer = null;
    let ended = null; // why my last call ended (a reason of chat/calls.py), until the next one

    // --- the server's side: call.<room> and user.<me> -------------------------------

    function watch(room) {
      shown = room.slug;
      follow(room);
      for (const slug of Array.from(watched.keys())) {
        if (slug !== shown && (!mine || mine.slug !== slug)) unfollow(slug);
      }
      render();
    }

    function follow(room) {
      if (watched.has(room.slug)) return;
      const topic = `call.${room.slug}`;
      const entry = { room, state: null, pushes: 0, stop: () => {} };
      watched.set(room.slug, entry);
      entry.stop = client.subscribe(topic, (data) => onState(room.slug, data), {
        onReset: () => loadState(room.slug),
      });
      loadState(room.slug);
    }

    function unfollow(slug) {
      const entry = watched.get(slug);
      if (!entry) return;
      entry.stop();
      watched.delete(slug);
    }

    /** The room's live call from GET /chat/api/rooms/<room>/call (on follow and on a reset). */
    async function loadState(slug) {
      const asked = watched.get(slug);
      if (!asked) return;
      const pushesBefore = asked.pushes;
      const answer = await fetch(config.callUrl.replace("ROOM", encodeURIComponent(slug)), {
        credentials: "same-origin",
      });
      if (!answer.ok) return;
      const { call } = await answer.json();
      const entry = watched.get(slug);
      if (entry !== asked || entry.pushes !== pushesBefore) return; // unfollowed, or a push is newer
      entry.state = call;
      if (mine && !mine.joining && mine.slug === slug && !inCall(call, me)) endMine(call);
      render();
    }

    function inCall(state, userId) {
      return Boolean(state) && state.state !== "ended" && state.participants.some((p) => p.id === userId);
    }

    function onState(slug, data) {
      const entry = watched.get(slug);
      if (!entry || !data || data.type !== "state") return;
      entry.pushes += 1;
      entry.state = data.state === "ended" ? null : data;
      if (mine && mine.slug === slug) followMine(data);
      render();
    }

    /** A state push of the call I am in: open and close peer connections as it says. */
    function followMine(data) {
      if (data.state === "ended") {
        endMine(data);
        return;
      }
      const joinedNow = mine.joining && data.user && data.user.id === me && ["invite", "accept"].includes(data.event);
      if (joinedNow) {
        mine.joining = false;
        mine.callId = data.call;
        for (const peerId of data.offer_to) offerTo(peerId, data.participants).catch(failed);
      }
      if (mine.callId !== data.call) return;
      const present = new Set(data.participants.map((p) => p.id));
      for (const [peerId, peer] of mine.peers) if (!present.has(peerId)) closePeer(peerId, peer);
      if (!mine.joining && !present.has(me)) endMine(data);
    }

    /** Offers, answers and ICE candidates for me, and rings from other rooms. */
    function onPersonal(data) {
      if (!data || typeof data !== "object") return;
      if (data.type === "ring") {
        showRing(data);
        return;
      }
      if (!mine || data.room !== mine.slug || (mine.callId !== null && data.call !== mine.callId)) return;
      const from = data.from && data.from.id;
      if (typeof from !== "number") return;
      if (data.type === "offer") answerOffer(from, data.from.name, data.sdp).catch(failed);
      else if (data.type === "answer") takeAnswer(from, data.sdp).catch(failed);
      else if (data.type === "ice") takeCandidates(from, data.candidates || [data.candidate]).catch(failed);
    }

    client.subscribe(`user.${me}`, () => {}, { onEphemeral: onPersonal });

    // --- joining and leaving -------------------------------------------------------

    async function join(kind) {
      const slug = shown;
      if (mine || !slug) return;
      showError("");
      mine = { slug, callId: null, joining: true, stream: null, peers: new Map(), muted: false };
      const joining = mine;
      render();
      try {
        const [stream] = await Promise.all([
          navigator.mediaDevices.getUserMedia({ audio: true, video: false }),
          loadIceServers(),
        ]);
        if (mine !== joining) {
          stream.getTracks().forEach((track) => track.stop());
          return;
        }
        mine.stream = stream;
      } catch (error) {
        if (mine === joining) mine = null;
        const denied = error.name === "NotAllowedError" || error.name === "NotFoundError";
        showError(denied ? `no microphone: ${error.message}` : `could not start the call: ${error.message || error}`);
        render();
        return;
      }
      if (client.publish(`call.${slug}`, { type: kind }) === false) {
        endMine(null);
        showError("not connected: try again in a moment");
      }
    }

    function leave() {
      if (!mine) return;
      client.publish(`call.${mine.slug}`, { type: "hangup" });
      endMine(null);
    }

    function decline() {
      if (shown) client.publish(`call.${shown}`, { type: "decline" });
      hideRing();
    }

    function endMine(state) {
      if (!mine) return;
      const left = mine;
      mine = null;
      for (const [peerId, peer] of left.peers) closePeer(peerId, peer, left);
      if (left.stream) left.stream.getTracks().forEach((track) => track.stop());
      ended = state && state.state === "ended" ? state.reason : null;
      if (left.slug !== shown) unfollow(left.slug);
      render();
    }

    function toggleMute() {
      if (!mine || !mine.stream) return;
      mine.muted = !mine.muted;
      mine.stream.getAudioTracks().forEach((track) => {
        track.enabled = !mine.muted;
      });
      render();
    }

    async function loadIceServers() {
      const now = Date.now() / 1000;
      if (iceConfig && (iceConfig.expires_at === null || iceConfig.expires_at - 60 > now)) return;
      const answer = await fetch(config.iceServersUrl, { credentials: "same-origin" });
      if (!answer.ok) throw new Error(`ICE servers: HTTP ${answer.status}`);
      iceConfig = await answer.json();
    }

    // --- the mesh: one RTCPeerConnection per other participant ----------------------

    function newPeer(peerId, name) {
      const pc = new RTCPeerConnection({ iceServers: iceConfig ? iceConfig.iceServers : [] });
      const peer = { pc, name, audio: new Audio(), pendingIce: [], outgoingIce: [], iceTimer: null, received: 0, flowing: false };
      peer.audio.autoplay = true;
      for (const track of mine.stream.getTracks()) pc.addTrack(track, mine.stream);
      pc.ontrack = (event) => {
        peer.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
      };
      pc.onicecandidate = (event) => queueCandidate(peerId, peer, event.candidate);
      pc.onconnectionstatechange = () => render();
      mine.peers.set(peerId, peer);
      return peer;
    }

    async function offerTo(peerId, participants) {
      const who = participants.find((p) => p.id === peerId);
      const peer = newPeer(peerId, who ? who.name : String(peerId));
      const offer = await peer.pc.createOffer();
      await peer.pc.setLocalDescription(offer);
      signal({ type: "offer", to: peerId, sdp: peer.pc.localDescription.sdp });
      render();
    }

    async function answerOffer(peerId, name, sdp) {
      const peer = mine.peers.get(peerId) || newPeer(peerId, name);
      await peer.pc.setRemoteDescription({ type: "offer", sdp });
      await addPendingIce(peer);
      const answer = await peer.pc.createAnswer();
      await peer.pc.setLocalDescription(answer);
      signal({ type: "answer", to: peerId, sdp: peer.pc.localDescription.sdp });
      render();
    }

    async function takeAnswer(peerId, sdp) {
      const peer = mine.peers.get(peerId);
      if (!peer || peer.pc.signalingState !== "have-local-offer") return;
      await peer.pc.setRemoteDescription({ type: "answer", sdp });
      await addPendingIce(peer);
    }

    async function takeCandidates(peerId, candidates) {
      const peer = mine.peers.get(peerId);
      const usable = candidates.filter((candidate) => candidate && candidate.candidate);
      if (!peer) return; // an offer always comes before its candidates
      if (!peer.pc.remoteDescription) {
        peer.pendingIce.push(...usable);
        return;
      }
      for (const candidate of usable) await peer.pc.addIceCandidate(candidate);
    }

    async function addPendingIce(peer) {
      const pending = peer.pendingIce.splice(0);
      for (const candidate of pending) await peer.pc.addIceCandidate(candidate);
    }

    function queueCandidate(peerId, peer, candidate) {
      peer.outgoingIce.push(candidate ? candidate.toJSON() : null);
      if (peer.iceTimer !== null) return;
      peer.iceTimer = setTimeout(() => {
        peer.iceTimer = null;
        if (!mine || mine.peers.get(peerId) !== peer) return;
        while (peer.outgoingIce.length) {
          signal({ type: "ice", to: peerId, candidates: peer.outgoingIce.splice(0, ICE_BATCH_MAX) });
        }
      }, ICE_BATCH_MS);
    }

    function signal(data) {
      if (mine) client.publish(`call.${mine.slug}`, data);
    }

    function closePeer(peerId, peer, from = mine) {
      clearTimeout(peer.iceTimer);
      peer.pc.close();
      peer.audio.srcObject = null;
      if (from) from.peers.delete(peerId);
    }

    /** Per peer: connection state and audio bytes, from RTCPeerConnection.getStats(). */
    async function stats() {
      const figures = {};
      if (!mine) return figures;
      for (const [peerId, peer] of mine.peers) {
        let bytesReceived = 0;
        let bytesSent = 0;
        (await peer.pc.getStats()).forEach((report) => {
          if (report.kind !== "audio") return;
          if (report.type === "inbound-rtp") bytesReceived += report.bytesReceived || 0;
          if (report.type === "outbound-rtp") bytesSent += report.bytesSent || 0;
        });
        figures[peerId] = { name: peer.name, state: peer.pc.connectionState, bytesReceived, bytesSent };
      }
      return figures;
    }

    setInterval(async () => {
      if (!mine || !mine.peers.size) return;
      const figures = await stats();
      let changed = false;
      for (const [peerId, figure] of Object.entries(figures)) {
        const peer = mine && mine.peers.get(Number(peerId));
        if (!peer) continue;
        const flowing = figure.bytesReceived > peer.received;
        changed = changed || flowing !== peer.flowing;
        peer.received = figure.bytesReceived;
        peer.flowing = flowing;
      }
      if (changed) render();
    }, STATS_EVERY_MS);

    // --- the panel ------------------------------------------------------------------

    function render() {
      const slug = mine ? mine.slug : shown;
      const entry = slug && watched.get(slug);
      const state = entry ? entry.state : null;
      const panel = el("call");
      let phase = "idle";
      if (mine) phase = mine.joining ? "joining" : state && state.state === "ringing" ? "ringing" : "in-call";
      else if (inCall(state, me)) phase = "elsewhere"; // this user's other window is in it
      else if (state) phase = "incoming";
      panel.dataset.phase = phase;
      panel.dataset.room = slug || "";
      el("call-start").hidden = phase !== "idle";
      el("call-accept").hidden = phase !== "incoming";
      el("call-accept").textContent = state && state.state === "active" ? "Join" : "Accept";
      el("call-decline").hidden = !(phase === "incoming" && state.state === "ringing");
      el("call-mute").hidden = !mine;
      el("call-mute").setAttribute("aria-pressed", String(Boolean(mine && mine.muted)));
      el("call-mute").textContent = mine && mine.muted ? "Unmute" : "Mute";
      el("call-hangup").hidden = !mine;
      if (phase !== "idle") ended = null;
      el("call-status").textContent = statusText(phase, state);
      if (ended) el("call-status").dataset.ended = ended;
      else delete el("call-status").dataset.ended;
      renderPeers();
    }

    function statusText(phase, state) {
      const others = state ? state.participants.filter((p) => p.id !== me).map((p) => p.name) : [];
      if (phase === "joining") return "Connecting the microphone…";
      if (phase === "ringing") return "Ringing…";
      if (phase === "in-call") return others.length ? `In a call with ${others.join(", ")}` : "In a call";
      if (phase === "elsewhere") return "You are in this call in another window";
      if (phase === "incoming") {
        return state.state === "ringing" ? `${others.join(", ")} calling…` : `Call in progress: ${others.join(", ")}`;
      }
      return ended ? `Call ended: ${REASONS[ended] || ended}` : "";
    }

    function renderPeers() {
      const peers = mine ? Array.from(mine.peers.entries()) : [];
      el("call-peers").replaceChildren(
        ...peers.map(([peerId, peer]) => {
          const item = document.createElement("li");
          item.dataset.id = peerId;
          item.dataset.state = peer.pc.connectionState;
          item.dataset.audio = peer.flowing ? "flowing" : "silent";
          const state = peer.pc.connectionState === "connected" ? (peer.flowing ? "audio" : "connected") : peer.pc.connectionState;
          item.textContent = `${peer.name} · ${state}`;
          return item;
        }),
      );
    }

    function showRing(ring) {
      if (mine || ring.room === shown) return; // the panel shows this room's call already
      el("ring-text").textContent = `${ring.from.name} is calling`;
      el("ring").dataset.room = ring.room;
      el("ring").hidden = false;
      clearTimeout(ringTimer);
      ringTimer = setTimeout(hideRing, config.ringTimeoutS * 1000); // it has stopped ringing by then
    }

    function hideRing() {
      el("ring").hidden = true;
    }

    function showError(text) {
      el("call-error").textContent = text;
    }

    function failed(error) {
      // A peer connection closed under a step that was under way (a hang-up): nothing to say.
      if (mine) showError(`call: ${error.message || error}`);
    }

    client.on("error", (frame) => {
      if (!frame.topic || !frame.topic.startsWith("call.")) return;
      showError(frame.msg);
      // The server refused our invite or accept (the call is full, say): we are not in it.
      if (mine && mine.joining && frame.topic === `call.${mine.slug}`) endMine(null);
    });

    el("call-start").addEventListener("click", () => join("invite"));
    el("call-accept").addEventListener("click", () => join("accept"));
    el("call-decline").addEventListener("click", decline);
    el("call-hangup").addEventListener("click", leave);
    el("call-mute").addEventListener("click", toggleMute);
    el("ring-open").addEventListener("click", () => {
      hideRing();
      onOpenRoom(el("ring").dataset.room);
    });

    render();
    return { watch, stats, leave };
  }

  global.ChatCalls = { create };
})(globalThis);
