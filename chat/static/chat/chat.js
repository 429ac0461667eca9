/*
 * The chat page. It lists the rooms the user may read (GET /chat/api/rooms),
 * subscribes to the open room's topic chat.<room> through push.js, fills in the
 * history (GET /chat/api/rooms/<room>/messages), and sends with the socket's
 * publish: {"text": ...} for a message, {"type": "typing"} while typing. The
 * server decides everything shown: a message appears when its push arrives,
 * the sender's own included.
 */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const client = new PushClient();
  const el = (id) => document.getElementById(id);
  const TYPING_SHOWN_MS = 3000;
  const TYPING_EVERY_MS = 2000;

  const calls = ChatCalls.create({ client, config, onOpenRoom: (slug) => openRoomBySlug(slug) });
  window.chatCalls = calls; // the page's call, for the console: await chatCalls.stats()
  let rooms = [];
  let current = null; // {room, stop, messages: Map(id -> message), typing: Map(name -> timer)}
  let lastTypingSent = 0;

  client.on("state", (state) => {
    el("state").textContent = state;
    el("state").dataset.state = state;
  });
  client.on("error", (frame) => {
    if (!current || (frame.topic && frame.topic !== current.room.topic)) return;
    el("error").textContent = frame.msg;
  });

  function renderMessages() {
    const list = el("messages");
    const sorted = Array.from(current.messages.values()).sort((a, b) => a.id - b.id);
    list.replaceChildren(
      ...sorted.map((message) => {
        const item = document.createElement("li");
        item.dataset.id = message.id;
        const who = document.createElement("strong");
        who.textContent = message.author ? message.author.name : "someone";
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = message.text;
        item.append(who, " ", text);
        return item;
      }),
    );
    list.scrollTop = list.scrollHeight;
  }

  function addMessages(messages) {
    for (const message of messages) {
      current.messages.set(message.id, message);
      const author = message.author && message.author.name;
      if (author && current.typing.has(author)) {
        clearTimeout(current.typing.get(author)); // they sent what they were typing
        current.typing.delete(author);
      }
    }
    renderMessages();
    renderTyping();
  }

  function renderMembers(members) {
    el("members").replaceChildren(
      ...members.map((member) => {
        const item = document.createElement("li");
        item.textContent = member.name || member.username || String(member.id);
        item.dataset.id = member.id;
        return item;
      }),
    );
  }

  function showTyping(user) {
    if (!current || !user || user.id === config.user.id) return;
    clearTimeout(current.typing.get(user.name));
    current.typing.set(
      user.name,
      setTimeout(() => {
        current.typing.delete(user.name);
        renderTyping();
      }, TYPING_SHOWN_MS),
    );
    renderTyping();
  }

  function renderTyping() {
    const names = current ? Array.from(current.typing.keys()) : [];
    el("typing").textContent = names.length ? `${names.join(", ")} typing…` : "";
  }

  async function openRoom(room) {
    if (current) current.stop();
    current = { room, stop: () => {}, messages: new Map(), typing: new Map() };
    el("room-title").textContent = room.title;
    el("messages").dataset.room = room.slug;
    el("error").textContent = "";
    for (const item of el("rooms").children) {
      item.classList.toggle("current", item.dataset.slug === room.slug);
    }
    calls.watch(room);
    const opened = current;
    // Subscribe first, then read the history: nothing falls between the two, and a
    // message in both is the same id.
    opened.stop = client.subscribe(room.topic, (data) => opened === current && addMessages([data]), {
      onReset: () => opened === current && loadHistory(opened),
      onPresence: (members) => opened === current && renderMembers(members),
      onJoin: () => opened === current && renderMembers(client.members(room.topic)),
      onLeave: () => opened === current && renderMembers(client.members(room.topic)),
      onEphemeral: (data) => opened === current && data && data.type === "typing" && showTyping(data.user),
    });
    await loadHistory(opened);
    el("text").disabled = false;
    el("send").querySelector("button").disabled = false;
    el("text").focus();
  }

  async function loadHistory(opened) {
    const url = config.messagesUrl.replace("ROOM", encodeURIComponent(opened.room.slug));
    const answer = await fetch(url, { credentials: "same-origin" });
    if (!answer.ok) {
      el("error").textContent = `could not load the history (${answer.status})`;
      return;
    }
    const page = await answer.json();
    if (opened === current) addMessages(page.messages);
  }

  async function loadRooms() {
    const answer = await fetch(config.roomsUrl, { credentials: "same-origin" });
    ({ rooms } = await answer.json());
    el("rooms").replaceChildren(
      ...rooms.map((room) => {
        const item = document.createElement("li");
        item.dataset.slug = room.slug;
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = room.direct && room.with ? `@${room.with.name}` : room.title;
        button.addEventListener("click", () => openRoom(room));
        item.append(button);
        return item;
      }),
    );
  }

  async function start() {
    await loadRooms();
    const wanted = new URLSearchParams(location.search).get("room");
    const first = rooms.find((room) => room.slug === wanted) || rooms[0];
    if (first) openRoom(first);
  }

  /** Open the room ``slug`` (a ring from a room not on screen); reload the list if it is new. */
  async function openRoomBySlug(slug) {
    if (!rooms.some((room) => room.slug === slug)) await loadRooms();
    const room = rooms.find((room) => room.slug === slug);
    if (room) openRoom(room);
  }

  el("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el("text").value.trim();
    if (!current || !text) return;
    el("error").textContent = "";
    if (client.publish(current.room.topic, { text }) !== false) el("text").value = "";
    else el("error").textContent = "not connected: try again in a moment";
  });

  el("text").addEventListener("input", () => {
    const now = Date.now();
    if (!current || now - lastTypingSent < TYPING_EVERY_MS) return;
    lastTypingSent = now;
    client.publish(current.room.topic, { type: "typing" });
  });

  start();
})();
