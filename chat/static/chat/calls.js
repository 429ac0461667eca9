/*
 * Voice calls on the chat page: the call panel and the WebRTC mesh behind it.
 *
 *   const calls = ChatCalls.create({ client, config, api, onOpenRoom });  // api: POST JSON with CSRF
 *   calls.watch(room);        // the room shown: its call.<room> line
 *   await calls.stats();      // {peerId: {state, bytesReceived, restarts, pair, createdAt, ...}}
 *   calls.ice();              // the RTCConfiguration last fetched, and how many fetches
 *   calls.restartIce();       // restart every connection's ICE now (fresh ICE servers)
 *   calls.levels();           // {peerId: audio level 0..1}: what data-speaking follows
 *   calls.devices();          // the microphone track sent to each peer, speakers, choices
 *
 * Mute is part of the call's state: the page publishes {"type": "mute", "muted": b}
 * and each participant of a ``call.state`` push carries ``muted``. Microphone and
 * speaker choice, speaking levels and "You are muted" are chat/static/chat/media.js.
 *
 * The server runs the call (chat/calls.py): a ``call.state`` push on
 * ``call.<room>`` says who is in it (each ``in_call`` or ``reconnecting``) and,
 * on a join or rejoin, whom that page offers to (``offer_to``); those close any
 * connection they hold to it and wait for its offer. Offers, answers and ICE
 * candidates go through the server to one participant's ``user.<id>`` topic,
 * each carrying the sending page's id (``tab``), so a connection is always
 * matched to one page; the audio goes browser to browser. This file only
 * follows what the server says.
 *
 * What survives what:
 * - a socket blip (a proxy timeout, a server restart): the peer connections
 *   stay; once push.js has subscribed again, the page publishes ``rejoin``
 *   listing the connections it still holds (``keep``), and the server shows it
 *   in the call again;
 * - a reload: the tab remembers its call (sessionStorage) and rejoins within
 *   the server's grace period, offering afresh to everyone;
 * - a network fault: a connection whose ICE fails, or stays disconnected for
 *   DISCONNECTED_RESTART_MS, fetches fresh ICE servers (new TURN credentials)
 *   and restarts ICE, again with backoff; renegotiation follows the perfect
 *   negotiation pattern (of two participants, the one who joined later is
 *   polite and rolls back its own offer when both offer at once). One not back
 *   within config.peerGiveUpS is reported ``lost`` and shown so on every page.
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
  // ICE "disconnected" this long (it often recovers by itself sooner): restart it.
  const DISCONNECTED_RESTART_MS = 3000;
  // Restarts of one connection are at least this far apart, doubling up to 8 s; the
  // polite side waits a little longer, so usually one side restarts and the other answers.
  const RESTART_GAP_MS = 2000;
  const POLITE_DELAY_MS = 1500;
  // A restart not connected after this long is tried again.
  const RESTART_CHECK_MS = 5000;
  // TURN credentials are renewed halfway through their life, never more often than this.
  const ICE_REFRESH_MIN_MS = 1000;
  const MARKER_KEY = "chat.call"; // sessionStorage: the call this tab is in, for a reload
  const REASONS = {
    cancelled: "the caller hung up",
    declined: "declined",
    unanswered: "nobody answered",
    hung_up: "call ended",
    disconnected: "the other side left",
  };
  const JOIN_EVENTS = ["invite", "accept", "rejoin"];
  // How long callIn and acceptIn wait for the page's socket to be counted on call.<room>.
  const PRESENCE_WAIT_MS = 10000;

  function newTabId() {
    const bytes = new Uint8Array(12);
    global.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function readMarker() {
    try {
      const marker = JSON.parse(global.sessionStorage.getItem(MARKER_KEY) || "null");
      return marker && typeof marker.slug === "string" && Number.isInteger(marker.call) ? marker : null;
    } catch (error) {
      return null;
    }
  }

  function writeMarker(marker) {
    try {
      if (marker) global.sessionStorage.setItem(MARKER_KEY, JSON.stringify(marker));
      else global.sessionStorage.removeItem(MARKER_KEY);
    } catch (error) {
      // storage refused (privacy mode): a reload then cannot rejoin by itself
    }
  }

  function isUp(pc) {
    return pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed";
  }

  function create({ client, config, onOpenRoom, api }) {
    const el = (id) => document.getElementById(id);
    const me = config.user.id;
    const tab = newTabId(); // this page's id: a reload or another window is another page
    const watched = new Map(); // slug -> {room, state, loaded, present, pushes, stop}
    let shown = null; // slug of the room on screen
    let mine = null; // {slug, callId, joining, rejoin, stream, peers: Map(id -> Peer), lost: Set, muted}
    let resume = readMarker(); // {slug, call}: the call this tab was in before a reload
    let iceConfig = null; // {iceServers, iceTransportPolicy, expires_at, expires_in}
    let iceRefreshTimer = null;
    let iceFetches = 0;
    // Microphone and speaker choice, levels, "You are muted" (chat/static/chat/media.js).
    const media = global.ChatMedia.create({ current: () => mine });
    const presenceWaiters = new Set(); // {slug, resolve, timer}: callIn and acceptIn waiting
    const rings = global.ChatRings.create({
      config,
      onAccept: (ring) => acceptIn(ring.room).catch(failed),
      onDecline: (ring) => client.publish(`call.${ring.room}`, { type: "decline" }),
      busy: () => Boolean(mine),
      shownRoom: () => shown,
      myCall: () => (mine && mine.callId) || null,
    });
    let ended = null; // why my last call ended (a reason of chat/calls.py), until the next one

    // --- the server's side: call.<room> and user.<me> -------------------------------

    function watch(room) {
      shown = room.slug;
      follow(room);
      watched.get(room.slug).room = room; // followed by slug alone before (callIn), maybe
      for (const slug of Array.from(watched.keys())) {
        if (slug !== shown && slug !== callSlug()) unfollow(slug);
      }
      render();
    }

    function callSlug() {
      if (mine) return mine.slug;
      return resume ? resume.slug : null;
    }

    function follow(room) {
      if (watched.has(room.slug)) return;
      const topic = `call.${room.slug}`;
      const entry = { room, state: null, loaded: false, present: false, pushes: 0, stop: () => {} };
      watched.set(room.slug, entry);
      entry.stop = client.subscribe(topic, (data) => onState(room.slug, data), {
        onReset: () => loadState(room.slug),
        // Sent on every (re)subscription: the server counts this socket on the topic now.
        onPresence: () => {
          entry.present = true;
          onSubscribed(room.slug);
          presenceCame(room.slug);
        },
      });
      loadState(room.slug);
    }

    function unfollow(slug) {
      const entry = watched.get(slug);
      if (!entry) return;
      entry.stop();
      watched.delete(slug);
    }

    client.on("state", (state) => {
      if (state === "open") return;
      for (const entry of watched.values()) entry.present = false;
    });

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
      entry.loaded = true;
      if (mine && !mine.joining && mine.slug === slug && !inCall(call, me)) endMine(call);
      maybeResume(slug);
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

    /** Subscribed (again) to call.<slug>: back in my call after a blip, or after a reload. */
    function onSubscribed(slug) {
      if (mine && mine.slug === slug && !mine.joining) {
        const keep = [];
        for (const [peerId, peer] of mine.peers) {
          if (!["closed", "failed"].includes(peer.pc.connectionState)) keep.push(peerId);
        }
        client.publish(`call.${slug}`, { type: "rejoin", keep, tab });
        return;
      }
      maybeResume(slug);
    }

    /** After a reload: rejoin the call this tab was in, once its state and presence are here. */
    function maybeResume(slug) {
      const entry = watched.get(slug);
      if (mine || !resume || resume.slug !== slug || !entry || !entry.loaded || !entry.present) return;
      const marker = resume;
      resume = null;
      const state = entry.state;
      if (!state || state.call !== marker.call || !inCall(state, me)) {
        writeMarker(null); // that call is over for me: nothing to rejoin
        if (slug !== shown) unfollow(slug);
        render();
        return;
      }
      start("rejoin", slug, marker.call);
    }

    /** A state push of the call I am in: open and close peer connections as it says. */
    function followMine(data) {
      if (data.state === "ended") {
        endMine(data);
        return;
      }
      const byMe = data.user && data.user.id === me;
      const joinEvent = JOIN_EVENTS.includes(data.event);
      if (byMe && joinEvent && data.tab === tab) {
        mine.joining = false;
        mine.callId = data.call;
        writeMarker({ slug: mine.slug, call: data.call });
        syncMute(data);
        for (const peerId of data.offer_to) offerTo(peerId, data.participants);
      } else if (byMe && joinEvent && !mine.joining) {
        endMine(null); // another page of mine took my place in the call
        showError("This call went on in another window");
        return;
      }
      if (mine.callId !== data.call) return;
      if (!byMe && joinEvent && data.offer_to.includes(me)) {
        // Their page offers afresh: what I hold was made with another page of theirs.
        const peer = mine.peers.get(data.user.id);
        if (peer && peer.remoteTab !== data.tab) closePeer(data.user.id, peer);
      }
      const present = new Set(data.participants.map((p) => p.id));
      for (const [peerId, peer] of mine.peers) if (!present.has(peerId)) closePeer(peerId, peer);
      mine.lost = new Set(
        data.lost.filter((pair) => pair.includes(me)).map((pair) => (pair[0] === me ? pair[1] : pair[0])),
      );
      for (const peerId of mine.lost) {
        const peer = mine.peers.get(peerId);
        if (peer) closePeer(peerId, peer);
      }
      if (!mine.joining && !present.has(me)) endMine(data);
    }

    /** Offers, answers and ICE candidates for me, and rings from other rooms. */
    function onPersonal(data) {
      if (!data || typeof data !== "object") return;
      if (data.type === "ring" || data.type === "ring_end") {
        rings.take(data);
        return;
      }
      // Until my join or rejoin is pushed I take nothing: I am the one who offers then.
      if (!mine || mine.joining || data.room !== mine.slug || data.call !== mine.callId) return;
      const from = data.from && data.from.id;
      if (typeof from !== "number") return;
      const remoteTab = typeof data.tab === "string" ? data.tab : null;
      if (data.type === "offer" || data.type === "answer") {
        takeDescription(from, data.from.name, data.type, data.sdp, remoteTab).catch(failed);
      } else if (data.type === "ice") {
        takeCandidates(from, data.candidates || [data.candidate], remoteTab).catch(failed);
      }
    }

    client.subscribe(`user.${me}`, () => {}, { onEphemeral: onPersonal });

    // --- joining and leaving -------------------------------------------------------

    /** Join (invite, accept) the call of the room shown, or rejoin ``callId`` in ``slug``. */
    async function start(kind, slug = shown, callId = null) {
      if (mine || !slug) return;
      showError("");
      mine = {
        slug,
        callId,
        joining: true,
        rejoin: kind === "rejoin",
        stream: null,
        peers: new Map(),
        lost: new Set(),
        muted: kind === "rejoin" && media.rememberedMute(callId),
      };
      const joining = mine;
      render();
      try {
        const [stream] = await Promise.all([
          media.getUserMedia(), // the microphone chosen last, with its processing switches
          loadIceServers(),
        ]);
        if (mine !== joining) {
          stream.getTracks().forEach((track) => track.stop());
          return;
        }
        mine.stream = stream;
        media.started(); // muted as mine.muted says
      } catch (error) {
        if (mine === joining) mine = null;
        if (kind === "rejoin") writeMarker(null);
        const denied = error.name === "NotAllowedError" || error.name === "NotFoundError";
        showError(denied ? `no microphone: ${error.message}` : `could not start the call: ${error.message || error}`);
        render();
        return;
      }
      const data = kind === "rejoin" ? { type: "rejoin", keep: [], tab } : { type: kind, tab };
      if (client.publish(`call.${slug}`, data) === false) {
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
      if (shown) client.publish(`call.${shown}`, { type: "decline" }); // its ring_end stops the ring
    }

    /** Resolves once this page's socket is counted on call.<slug> (a join needs that). */
    function whenPresent(slug) {
      const entry = watched.get(slug);
      if (entry && entry.present) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const waiter = { slug, resolve, timer: null };
        waiter.timer = setTimeout(() => {
          presenceWaiters.delete(waiter);
          reject(new Error("not connected: try again in a moment"));
        }, PRESENCE_WAIT_MS);
        presenceWaiters.add(waiter);
      });
    }

    function presenceCame(slug) {
      for (const waiter of Array.from(presenceWaiters)) {
        if (waiter.slug !== slug) continue;
        clearTimeout(waiter.timer);
        presenceWaiters.delete(waiter);
        waiter.resolve();
      }
    }

    /** Call in room ``slug`` (a direct conversation opened from the people list, say). */
    async function callIn(slug) {
      if (!watched.has(slug)) follow({ slug });
      try {
        await whenPresent(slug);
      } catch (error) {
        showError(error.message);
        return;
      }
      await start("invite", slug);
    }

    /** Answer a ring from any room: open that room, then join its call. */
    async function acceptIn(slug) {
      if (mine && mine.slug !== slug) leave(); // one call at a time: this one ends mine
      await onOpenRoom(slug);
      try {
        await whenPresent(slug);
      } catch (error) {
        showError(error.message);
        return;
      }
      await start("accept", slug);
    }

    function endMine(state) {
      if (!mine) return;
      const left = mine;
      mine = null;
      writeMarker(null);
      for (const [peerId, peer] of left.peers) closePeer(peerId, peer, left);
      if (left.stream) left.stream.getTracks().forEach((track) => track.stop());
      media.stopped();
      ended = state && state.state === "ended" ? state.reason : null;
      if (left.slug !== shown) unfollow(left.slug);
      render();
    }

    function toggleMute() {
      if (!mine || !mine.stream) return;
      setMuted(!mine.muted);
      // Part of the call's state: the others' chips show it. While joining, the join's push
      // is compared with mine.muted (syncMute).
      if (!mine.joining) client.publish(`call.${mine.slug}`, { type: "mute", muted: mine.muted });
    }

    function setMuted(muted) {
      mine.muted = muted;
      mine.stream.getAudioTracks().forEach((track) => {
        track.enabled = !mine.muted;
      });
      media.muteChanged(mine.muted, mine.callId);
      render();
    }

    /**
     * My join or rejoin is pushed: if the server's ``muted`` for me is not mine, say mine
     * again (a mute clicked while the socket was away). A reloaded page that forgot it
     * was muted (no sessionStorage) takes the server's word for it instead.
     */
    function syncMute(data) {
      if (mine.muted) media.muteChanged(true, mine.callId); // now that the call's id is known
      const entry = data.participants.find((p) => p.id === me);
      if (!entry || typeof entry.muted !== "boolean" || !mine.stream) return;
      const firstOfReload = mine.rejoin && !mine.muteSynced;
      mine.muteSynced = true;
      if (entry.muted === mine.muted) return;
      if (firstOfReload && entry.muted) setMuted(true);
      else client.publish(`call.${mine.slug}`, { type: "mute", muted: mine.muted });
    }

    /** Fresh ICE servers (new TURN credentials) for each (re)connection and ICE restart. */
    async function loadIceServers() {
      const answer = await fetch(config.iceServersUrl, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) throw new Error(`ICE servers: HTTP ${answer.status}`);
      iceConfig = await answer.json();
      iceFetches += 1;
      scheduleIceRefresh();
    }

    // When the other side restarts ICE, our answer gathers relay candidates with the
    // credential we hold: renew it before it runs out, for as long as we are in a call.
    function scheduleIceRefresh() {
      clearTimeout(iceRefreshTimer);
      iceRefreshTimer = null;
      if (!iceConfig || !iceConfig.expires_in) return;
      const halfLife = Math.max(ICE_REFRESH_MIN_MS, (iceConfig.expires_in * 1000) / 2);
      iceRefreshTimer = setTimeout(refreshIceServers, halfLife);
    }

    async function refreshIceServers() {
      iceRefreshTimer = null;
      if (!mine) return; // out of a call: the next join fetches its own
      try {
        await loadIceServers();
      } catch (error) {
        iceRefreshTimer = setTimeout(refreshIceServers, RESTART_GAP_MS);
        return;
      }
      if (!mine) return;
      for (const peer of mine.peers.values()) {
        if (peer.pc.signalingState !== "closed") peer.pc.setConfiguration(rtcConfig());
      }
    }

    function rtcConfig() {
      return {
        iceServers: iceConfig ? iceConfig.iceServers : [],
        iceTransportPolicy: (iceConfig && iceConfig.iceTransportPolicy) || config.iceTransportPolicy || "all",
      };
    }

    // --- the mesh: one RTCPeerConnection per other participant ----------------------

    function myState() {
      const entry = mine && watched.get(mine.slug);
      return entry && entry.state && entry.state.call === mine.callId ? entry.state : null;
    }

    function statusOf(peerId) {
      const state = myState();
      const found = state && state.participants.find((p) => p.id === peerId);
      return found ? found.status : null;
    }

    /** Of two participants, the one who joined later (later in the server's list) is polite. */
    function isPolite(peerId) {
      const state = myState();
      const order = state ? state.participants.map((p) => p.id) : [];
      const mineAt = order.indexOf(me);
      const theirsAt = order.indexOf(peerId);
      return mineAt >= 0 && theirsAt >= 0 ? mineAt > theirsAt : me > peerId;
    }

    function isCurrent(peerId, peer) {
      return Boolean(mine) && mine.peers.get(peerId) === peer;
    }

    function newPeer(peerId, name, remoteTab = null) {
      const pc = new RTCPeerConnection(rtcConfig());
      const peer = {
        pc,
        name,
        remoteTab,
        audio: new Audio(),
        pendingIce: [],
        outgoingIce: [],
        iceTimer: null,
        received: 0,
        flowing: false,
        makingOffer: false,
        ignoreOffer: false,
        restarts: 0,
        rollbacks: 0, // offers of ours rolled back for theirs (we were the polite side)
        offersSent: 0, // renegotiations: a microphone change makes none (replaceTrack)
        offersReceived: 0,
        lastRestartAt: 0,
        restartTimer: null,
        giveUpTimer: null,
        createdAt: Date.now(), // which connection this is: a new one after a renegotiation
      };
      peer.audio.autoplay = true;
      media.attach(peer.audio); // on the chosen speaker
      for (const track of mine.stream.getTracks()) pc.addTrack(track, mine.stream);
      pc.ontrack = (event) => {
        peer.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
        play(peer.audio);
      };
      pc.onicecandidate = (event) => queueCandidate(peerId, peer, event.candidate);
      pc.onnegotiationneeded = () => makeOffer(peerId, peer);
      pc.oniceconnectionstatechange = () => watchIce(peerId, peer);
      pc.onconnectionstatechange = () => render();
      mine.peers.set(peerId, peer);
      armGiveUp(peerId, peer); // until it first connects, too
      return peer;
    }

    /** A join or rejoin of mine: a new connection to ``peerId``; its negotiationneeded offers. */
    function offerTo(peerId, participants) {
      const old = mine.peers.get(peerId);
      if (old) closePeer(peerId, old);
      const who = participants.find((p) => p.id === peerId);
      newPeer(peerId, who ? who.name : String(peerId));
      render();
    }

    async function makeOffer(peerId, peer) {
      if (!isCurrent(peerId, peer)) return;
      try {
        peer.makingOffer = true;
        await peer.pc.setLocalDescription();
        if (isCurrent(peerId, peer) && peer.pc.localDescription.type === "offer") {
          peer.offersSent += 1;
          signal({ type: "offer", to: peerId, sdp: peer.pc.localDescription.sdp, tab });
        }
      } catch (error) {
        if (isCurrent(peerId, peer)) failed(error);
      } finally {
        peer.makingOffer = false;
      }
    }

    /** Perfect negotiation: an offer or answer from ``peerId``'s page ``remoteTab``. */
    async function takeDescription(peerId, name, type, sdp, remoteTab) {
      let peer = mine.peers.get(peerId);
      if (peer && remoteTab && peer.remoteTab && peer.remoteTab !== remoteTab) {
        if (type !== "offer") return; // an answer from a page of theirs that is gone
        closePeer(peerId, peer); // a new page of theirs: a new connection
        peer = null;
      }
      if (!peer) {
        if (type !== "offer") return; // an answer for a connection already closed
        peer = newPeer(peerId, name, remoteTab);
      }
      peer.remoteTab = peer.remoteTab || remoteTab;
      if (type === "offer") peer.offersReceived += 1;
      const pc = peer.pc;
      const collision = type === "offer" && (peer.makingOffer || pc.signalingState !== "stable");
      peer.ignoreOffer = collision && !isPolite(peerId);
      if (peer.ignoreOffer) return; // the polite side rolls back and answers ours
      if (collision) peer.rollbacks += 1;
      if (type === "answer" && pc.signalingState !== "have-local-offer") return; // stale
      await pc.setRemoteDescription({ type, sdp }); // a polite offer collision rolls back here
      await addPendingIce(peer);
      if (type === "offer" && isCurrent(peerId, peer)) {
        await pc.setLocalDescription();
        signal({ type: "answer", to: peerId, sdp: pc.localDescription.sdp, tab });
      }
      render();
    }

    async function takeCandidates(peerId, candidates, remoteTab) {
      const peer = mine.peers.get(peerId);
      if (!peer) return; // an offer always comes before its candidates
      if (remoteTab && peer.remoteTab && remoteTab !== peer.remoteTab) return; // an old page's
      const usable = candidates.filter((candidate) => candidate && candidate.candidate);
      if (!peer.pc.remoteDescription) {
        peer.pendingIce.push(...usable);
        return;
      }
      for (const candidate of usable) await addCandidate(peer, candidate);
    }

    async function addPendingIce(peer) {
      const pending = peer.pendingIce.splice(0);
      for (const candidate of pending) await addCandidate(peer, candidate);
    }

    async function addCandidate(peer, candidate) {
      try {
        await peer.pc.addIceCandidate(candidate);
      } catch (error) {
        // A candidate of an offer we ignored, or of the ICE generation before a restart:
        // it cannot apply, and the current generation's candidates follow.
        if (!peer.ignoreOffer && peer.pc.signalingState !== "closed") console.debug("ICE candidate:", error);
      }
    }

    function queueCandidate(peerId, peer, candidate) {
      peer.outgoingIce.push(candidate ? candidate.toJSON() : null);
      if (peer.iceTimer !== null) return;
      peer.iceTimer = setTimeout(() => {
        peer.iceTimer = null;
        if (!isCurrent(peerId, peer)) return;
        while (peer.outgoingIce.length) {
          signal({ type: "ice", to: peerId, candidates: peer.outgoingIce.splice(0, ICE_BATCH_MAX), tab });
        }
      }, ICE_BATCH_MS);
    }

    function signal(data) {
      if (mine) client.publish(`call.${mine.slug}`, data);
    }

    // --- keeping a connection up: ICE restarts, and giving up ------------------------

    function watchIce(peerId, peer) {
      if (!isCurrent(peerId, peer)) return;
      const state = peer.pc.iceConnectionState;
      if (isUp(peer.pc)) {
        clearTimeout(peer.restartTimer);
        clearTimeout(peer.giveUpTimer);
        peer.restartTimer = peer.giveUpTimer = null;
      } else if (state === "failed") {
        scheduleRestart(peerId, peer, 0);
        armGiveUp(peerId, peer);
      } else if (state === "disconnected") {
        scheduleRestart(peerId, peer, DISCONNECTED_RESTART_MS);
        armGiveUp(peerId, peer);
      }
      render();
    }

    function scheduleRestart(peerId, peer, delayMs) {
      if (peer.restartTimer !== null) return;
      const gap = RESTART_GAP_MS * 2 ** Math.min(peer.restarts, 2);
      const wait = Math.max(delayMs, peer.lastRestartAt + gap - Date.now()) + (isPolite(peerId) ? POLITE_DELAY_MS : 0);
      peer.restartTimer = setTimeout(() => {
        peer.restartTimer = null;
        restartIce(peerId, peer).catch(failed);
      }, wait);
    }

    async function restartIce(peerId, peer, { evenIfUp = false } = {}) {
      if (!isCurrent(peerId, peer) || (isUp(peer.pc) && !evenIfUp)) return;
      if (statusOf(peerId) === "reconnecting") {
        // Their page is away: when it is back it rejoins, and offers if it must.
        scheduleRestart(peerId, peer, RESTART_GAP_MS);
        return;
      }
      peer.restarts += 1;
      peer.lastRestartAt = Date.now();
      try {
        await loadIceServers();
      } catch (error) {
        scheduleRestart(peerId, peer, RESTART_GAP_MS);
        return;
      }
      if (!isCurrent(peerId, peer) || (isUp(peer.pc) && !evenIfUp)) return;
      peer.pc.setConfiguration(rtcConfig());
      peer.pc.restartIce(); // negotiationneeded: a new offer with new ICE credentials
      clearTimeout(peer.restartTimer);
      peer.restartTimer = setTimeout(() => {
        peer.restartTimer = null;
        if (isCurrent(peerId, peer) && !isUp(peer.pc)) scheduleRestart(peerId, peer, 0);
      }, RESTART_CHECK_MS);
      render();
    }

    function armGiveUp(peerId, peer) {
      if (peer.giveUpTimer !== null) return;
      peer.giveUpTimer = setTimeout(() => {
        peer.giveUpTimer = null;
        giveUp(peerId, peer);
      }, config.peerGiveUpS * 1000);
    }

    function giveUp(peerId, peer) {
      if (!isCurrent(peerId, peer) || isUp(peer.pc)) return;
      if (statusOf(peerId) === "reconnecting") {
        armGiveUp(peerId, peer); // their grace period decides, not us
        return;
      }
      signal({ type: "lost", peer: peerId });
      closePeer(peerId, peer);
      mine.lost.add(peerId);
      render();
    }

    function closePeer(peerId, peer, from = mine) {
      clearTimeout(peer.iceTimer);
      clearTimeout(peer.restartTimer);
      clearTimeout(peer.giveUpTimer);
      peer.pc.close();
      peer.audio.srcObject = null;
      if (from && from.peers.get(peerId) === peer) from.peers.delete(peerId);
    }

    /** Play a peer's audio; where the browser wants a gesture first, the next click does it. */
    function play(audio) {
      const playing = audio.play();
      if (!playing || typeof playing.catch !== "function") return;
      playing.catch(() => {
        showError("Click anywhere on the page to hear the call");
        document.addEventListener(
          "click",
          () => {
            audio.play().catch(() => {});
            showError("");
          },
          { once: true },
        );
      });
    }

    // --- what the page and the console can read --------------------------------------

    /** Per peer: connection state, audio bytes, ICE restarts and the selected candidate pair. */
    async function stats() {
      const figures = {};
      if (!mine) return figures;
      for (const [peerId, peer] of mine.peers) {
        let bytesReceived = 0;
        let bytesSent = 0;
        let pairId = null;
        const reports = await peer.pc.getStats();
        reports.forEach((report) => {
          if (report.type === "transport" && report.selectedCandidatePairId) pairId = report.selectedCandidatePairId;
          if (report.kind !== "audio") return;
          if (report.type === "inbound-rtp") bytesReceived += report.bytesReceived || 0;
          if (report.type === "outbound-rtp") bytesSent += report.bytesSent || 0;
        });
        const pair = pairId && reports.get(pairId);
        const local = pair && reports.get(pair.localCandidateId);
        const remote = pair && reports.get(pair.remoteCandidateId);
        figures[peerId] = {
          name: peer.name,
          state: peer.pc.connectionState,
          ice: peer.pc.iceConnectionState,
          bytesReceived,
          bytesSent,
          restarts: peer.restarts,
          rollbacks: peer.rollbacks,
          offersSent: peer.offersSent,
          offersReceived: peer.offersReceived,
          createdAt: peer.createdAt,
          pair: pair
            ? {
                local: local && { type: local.candidateType, port: local.port, protocol: local.protocol },
                remote: remote && { type: remote.candidateType, port: remote.port, protocol: remote.protocol },
              }
            : null,
        };
      }
      return figures;
    }

    function ice() {
      return { config: iceConfig, fetches: iceFetches, tab };
    }

    /** Restart every connection's ICE now, with fresh ICE servers (a call that sounds broken). */
    async function restartAll() {
      if (!mine) return;
      await Promise.all(Array.from(mine.peers, ([peerId, peer]) => restartIce(peerId, peer, { evenIfUp: true })));
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
      const slug = callSlug() || shown;
      const entry = slug && watched.get(slug);
      const state = entry ? entry.state : null;
      const panel = el("call");
      let phase = "idle";
      if (mine) phase = mine.joining ? "joining" : state && state.state === "ringing" ? "ringing" : "in-call";
      else if (resume && resume.slug === slug && inCall(state, me)) phase = "joining"; // rejoining
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
      renderPeers(state);
      const shownEntry = shown && watched.get(shown);
      const open = Boolean(shownEntry && shownEntry.room.open);
      el("ring-me-pick").hidden = !open;
      el("ring-me").checked = open && Boolean(shownEntry.room.ring);
      rings.render();
    }

    function statusText(phase, state) {
      const others = state ? state.participants.filter((p) => p.id !== me).map((p) => p.name) : [];
      if (phase === "joining") return (mine && mine.rejoin) || resume ? "Rejoining the call…" : "Connecting the microphone…";
      if (phase === "ringing") return "Ringing…";
      if (phase === "in-call") return others.length ? `In a call with ${others.join(", ")}` : "In a call";
      if (phase === "elsewhere") return "You are in this call in another window";
      if (phase === "incoming") {
        return state.state === "ringing" ? `${others.join(", ")} calling…` : `Call in progress: ${others.join(", ")}`;
      }
      return ended ? `Call ended: ${REASONS[ended] || ended}` : "";
    }

    /** One chip per other participant: reconnecting, lost, or its connection's state and audio. */
    function renderPeers(state) {
      if (!mine || mine.joining) {
        el("call-peers").replaceChildren();
        return;
      }
      const others = new Map();
      if (state && state.call === mine.callId) {
        for (const p of state.participants) if (p.id !== me) others.set(p.id, p);
      }
      for (const [peerId, peer] of mine.peers) if (!others.has(peerId)) others.set(peerId, { name: peer.name });
      el("call-peers").replaceChildren(
        ...Array.from(others, ([peerId, who]) => {
          const peer = mine.peers.get(peerId);
          const item = document.createElement("li");
          item.dataset.id = peerId;
          item.dataset.status = who.status || "in_call";
          item.dataset.state = peer ? peer.pc.connectionState : mine.lost.has(peerId) ? "lost" : "none";
          item.dataset.audio = peer && peer.flowing ? "flowing" : "silent";
          let label = item.dataset.state;
          if (who.status === "reconnecting") label = "reconnecting";
          else if (peer && peer.pc.connectionState === "connected") label = peer.flowing ? "audio" : "connected";
          else if (!peer && !mine.lost.has(peerId)) label = "connecting";
          // Muted from the call's state; speaking from its audio level (media.js updates it).
          item.dataset.muted = String(Boolean(who.muted));
          item.dataset.speaking = String(!who.muted && media.isSpeaking(peerId));
          item.textContent = `${who.name} · ${label}${who.muted ? " · muted" : ""}`;
          return item;
        }),
      );
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
      // The server refused our invite, accept or rejoin (the call is full, or went on
      // without us): we are not in it.
      if (mine && mine.joining && frame.topic === `call.${mine.slug}`) endMine(null);
    });

    el("call-start").addEventListener("click", () => start("invite"));
    el("call-accept").addEventListener("click", () => start("accept"));
    el("call-decline").addEventListener("click", decline);
    el("call-hangup").addEventListener("click", leave);
    el("call-mute").addEventListener("click", toggleMute);
    el("ring-me").addEventListener("change", async (event) => {
      const box = event.target;
      const slug = shown;
      let answer;
      try {
        answer = await api(config.ringUrl.replace("ROOM", encodeURIComponent(slug)), { ring: box.checked });
      } catch (error) {
        box.checked = !box.checked;
        showError("could not change whether this room rings you");
        return;
      }
      const entry = watched.get(slug);
      if (entry) entry.room = { ...entry.room, ...answer.room };
    });
    client.on("state", (state) => {
      if (state === "open") rings.load().catch(() => {}); // rings sent while this page was away
    });

    if (resume) follow({ slug: resume.slug }); // the call this tab was in: rejoin it
    render();
    return {
      watch,
      callIn,
      stats,
      ice,
      restartIce: restartAll,
      leave,
      rings: rings.state,
      levels: media.levels,
      devices: media.devices,
    };
  }

  global.ChatCalls = { create };
})(globalThis);
