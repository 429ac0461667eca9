/*
 * The chat page. It lists the rooms the user may read (GET /chat/api/rooms),
 * subscribes to the open room's topic chat.<room> through push.js, fills in the
 * history (GET /chat/api/rooms/<room>/messages), and sends with the socket's
 * publish: {"text": ...} for a message, {"type": "typing"} while typing. The
 * server decides everything shown: a message appears when its push arrives,
 * the sender's own included.
 *
 * Also: a people picker (GET /chat/api/people) and "Here now", each person with
 * Message (POST /chat/api/direct/<id>, then that room) and Call (the same, then
 * calls.callIn); the room list kept live from user.<me> ("rooms" and "unread"
 * pushes; a reset reloads it), with a badge of unread messages per room; reading
 * what is on screen (POST .../read, debounced, only forward); older history paged
 * in as the list is scrolled to the top; each message's time in the viewer's
 * locale and time zone; New room (with chat.add_room) and Leave.
 */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const client = new PushClient();
  const el = (id) => document.getElementById(id);
  const TYPING_SHOWN_MS = 3000;
  const TYPING_EVERY_MS = 2000;
  const PEOPLE_DEBOUNCE_MS = 250; // a search goes this long after the last keystroke
  const READ_DEBOUNCE_MS = 300; // "read up to here" goes this long after the last message shown
  const TOP_PX = 40; // the message list this close to its top loads the next older page
  const BOTTOM_PX = 40; // this close to its bottom, new messages keep it at the bottom
  const me = config.user.id;
  const roomUrl = (template) => (slug) => template.replace("ROOM", encodeURIComponent(slug));
  const urls = {
    people: config.peopleUrl,
    direct: (id) => `${config.directUrl}${encodeURIComponent(id)}`,
    read: roomUrl(config.readUrl),
    leave: roomUrl(config.leaveUrl),
    messages: roomUrl(config.messagesUrl),
  };
  // What a room's data says the same for everyone (the rest is mine: unread, last_read, ring).
  const SHARED_FIELDS = ["slug", "title", "topic", "open", "direct"];
  const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

  const calls = ChatCalls.create({ client, config, api, onOpenRoom: (slug) => openRoomBySlug(slug) });
  window.chatCalls = calls; // the page's call, for the console: await chatCalls.stats()
  let rooms = [];
  // {room, stop, messages: Map(id -> message), typing: Map(name -> timer), before: id of the
  //  next older page or null (undefined until the first page), loadingOlder, generation, readSent}
  let current = null;
  let lastTypingSent = 0;
  let heldPushes = null; // [data, shared] pushed while GET /chat/api/rooms was under way
  let readTimer = null;
  window.chatPage = { client, rooms: () => rooms }; // for the console (and the tests)

  function csrfToken() {
    const cookie = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
    if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
    const input = document.querySelector("input[name='csrfmiddlewaretoken']");
    return input ? input.value : "";
  }

  /** GET (no body) or POST ``body`` as JSON; a refusal throws an Error with the server's reason. */
  async function api(url, body) {
    const options = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = csrfToken();
      options.body = JSON.stringify(body);
    }
    const answer = await fetch(url, options);
    let data = null;
    try {
      data = await answer.json();
    } catch (error) {
      data = null; // not JSON (a proxy's page, a CSRF refusal)
    }
    if (!answer.ok) {
      const error = new Error((data && data.error) || `HTTP ${answer.status}`);
      error.status = answer.status;
      throw error;
    }
    return data;
  }

  client.on("state", (state) => {
    el("state").textContent = state;
    el("state").dataset.state = state;
  });
  client.on("error", (frame) => {
    if (!current || (frame.topic && frame.topic !== current.room.topic)) return;
    el("error").textContent = frame.msg;
  });

  /** ``<time>``: the time in the viewer's locale and time zone, with the date when not today. */
  function timeOf(iso) {
    const at = new Date(iso);
    const shown = document.createElement("time");
    if (Number.isNaN(at.getTime())) return shown;
    shown.dateTime = iso;
    const today = at.toDateString() === new Date().toDateString();
    shown.textContent = (today ? timeFormat : dateTimeFormat).format(at);
    shown.title = fullFormat.format(at);
    return shown;
  }

  function messageItem(message) {
    const item = document.createElement("li");
    item.dataset.id = message.id;
    item.dataset.kind = message.kind || "text";
    if (message.kind === "missed_call") item.classList.add("missed-call");
    const who = document.createElement("strong");
    who.textContent = message.author ? message.author.name : "someone";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    item.append(who, " ", text);
    if (message.created_at) item.append(" ", timeOf(message.created_at));
    return item;
  }

  /**
   * Draw the messages in id order. ``keep``: older ones came in above, so what was on
   * screen stays where it was; ``stick``: to the bottom (the first page, my own message);
   * otherwise to the bottom only when it was there already (not while reading back).
   */
  function renderMessages({ keep = false, stick = false } = {}) {
    const list = el("messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    const atBottom = fromBottom - list.clientHeight <= BOTTOM_PX;
    const sorted = Array.from(current.messages.values()).sort((a, b) => a.id - b.id);
    list.replaceChildren(...sorted.map(messageItem));
    if (keep) list.scrollTop = list.scrollHeight - fromBottom;
    else if (stick || atBottom) list.scrollTop = list.scrollHeight;
  }

  function addMessages(messages, { keep = false, stick = false } = {}) {
    let mine = false;
    for (const message of messages) {
      current.messages.set(message.id, message);
      const author = message.author && message.author.name;
      if (message.author && message.author.id === me) mine = true;
      if (author && current.typing.has(author)) {
        clearTimeout(current.typing.get(author)); // they sent what they were typing
        current.typing.delete(author);
      }
    }
    renderMessages({ keep, stick: stick || (mine && !keep) });
    renderTyping();
    scheduleRead();
  }

  function newestShown(opened) {
    let newest = 0;
    for (const id of opened.messages.keys()) if (id > newest) newest = id;
    return newest;
  }

  // --- unread: "read up to here" for the room on screen, while the tab is seen ---------

  function scheduleRead() {
    if (!current || document.visibilityState !== "visible") return;
    const opened = current;
    clearTimeout(readTimer);
    readTimer = setTimeout(() => markRead(opened), READ_DEBOUNCE_MS);
  }

  async function markRead(opened) {
    if (opened !== current || document.visibilityState !== "visible") return;
    const newest = newestShown(opened);
    const room = opened.room;
    if (!newest || newest <= Math.max(room.last_read || 0, opened.readSent || 0)) return; // only forward
    opened.readSent = newest;
    try {
      const answer = await api(urls.read(room.slug), { last_read: newest });
      setUnread(answer.room, answer.unread, answer.last_read);
    } catch (error) {
      if (opened.readSent === newest) opened.readSent = 0; // the next message tries again
    }
  }

  function setUnread(slug, unread, lastRead) {
    const room = rooms.find((room) => room.slug === slug);
    if (!room) return;
    if (Number.isInteger(unread)) room.unread = unread;
    if (Number.isInteger(lastRead)) room.last_read = Math.max(room.last_read || 0, lastRead);
    renderRooms();
  }

  document.addEventListener("visibilitychange", scheduleRead);

  // --- history: the newest page on opening, older pages as the list is scrolled up -----

  function setComplete(opened) {
    if (opened !== current) return;
    el("messages").dataset.complete = String(opened.before === null);
  }

  /** The newest page (on opening the room, and after a reset: what was held is dropped). */
  async function loadHistory(opened, { reset = false } = {}) {
    const generation = ++opened.generation;
    if (reset) {
      opened.messages.clear();
      opened.before = undefined;
      setComplete(opened);
    }
    let page;
    try {
      page = await api(urls.messages(opened.room.slug));
    } catch (error) {
      if (opened === current) el("error").textContent = `could not load the history (${error.status || error.message})`;
      return;
    }
    if (opened !== current || generation !== opened.generation) return;
    opened.before = page.before;
    setComplete(opened);
    addMessages(page.messages, { stick: true });
    fillUp(opened);
  }

  /** The page before the oldest shown, prepended where it belongs, the view kept in place. */
  async function loadOlder(opened) {
    if (opened.loadingOlder || opened.before === null || opened.before === undefined) return;
    opened.loadingOlder = true;
    const generation = opened.generation;
    let page;
    try {
      page = await api(`${urls.messages(opened.room.slug)}?before=${encodeURIComponent(opened.before)}`);
    } catch (error) {
      if (opened === current) el("error").textContent = `could not load older messages (${error.status || error.message})`;
      return;
    } finally {
      opened.loadingOlder = false;
    }
    if (opened !== current || generation !== opened.generation) return;
    opened.before = page.before;
    setComplete(opened);
    addMessages(page.messages, { keep: true });
    fillUp(opened);
  }

  /** Still at the top (or nothing to scroll yet): the next older page. */
  function fillUp(opened) {
    if (opened === current && el("messages").scrollTop <= TOP_PX) loadOlder(opened);
  }

  el("messages").addEventListener("scroll", () => {
    if (current) fillUp(current);
  });

  function renderMembers(members) {
    el("members").replaceChildren(
      ...members.map((member) => {
        // A member is {"id": "user:<id>" (or "guest:<hash>"), "name"}: people get the buttons.
        const user = /^user:(\d+)$/.exec(String(member.id));
        const id = user ? Number(user[1]) : member.id;
        const person = { id, name: member.name || member.username || String(member.id) };
        const item = personItem(person, user && id !== me ? PERSON_ACTIONS : []);
        item.dataset.member = member.id;
        return item;
      }),
    );
  }

  // --- people: the picker, "Here now", and their Message and Call buttons ---------------

  const PERSON_ACTIONS = [
    { action: "message", label: "Message", run: (person) => messagePerson(person) },
    { action: "call", label: "Call", run: (person) => callPerson(person) },
  ];

  /** ``<li data-id>`` with the name and a button per action (``data-action``). */
  function personItem(person, actions) {
    const item = document.createElement("li");
    item.dataset.id = person.id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = person.name;
    item.append(name);
    for (const { action, label, run } of actions) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = label;
      button.setAttribute("aria-label", `${label} ${person.name}`);
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await run(person);
        } catch (error) {
          el("error").textContent = error.message || String(error);
        } finally {
          button.disabled = false;
        }
      });
      item.append(" ", button);
    }
    return item;
  }

  /** The direct conversation with ``person`` (made the first time), opened. */
  async function messagePerson(person) {
    const { room } = await api(urls.direct(person.id), {});
    upsertRoom(room);
    await openRoom(roomBySlug(room.slug));
    return room;
  }

  async function callPerson(person) {
    const room = await messagePerson(person);
    await calls.callIn(room.slug);
  }

  /** ``input`` searches GET /chat/api/people?q= (debounced) into ``list``; returns the search. */
  function peopleSearch(input, list, actions) {
    let timer = null;
    let asked = 0;
    async function search() {
      const ask = ++asked;
      const q = input.value.trim();
      let people;
      try {
        ({ people } = await api(`${urls.people}?q=${encodeURIComponent(q)}`));
      } catch (error) {
        if (ask === asked) list.dataset.error = error.message;
        return;
      }
      if (ask !== asked) return; // a later search is under way: its answer counts
      delete list.dataset.error;
      list.dataset.q = q; // what the list shows the answer to
      list.replaceChildren(...people.map((person) => personItem(person, actions(person))));
    }
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(search, PEOPLE_DEBOUNCE_MS);
    });
    return search;
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

  function stopRoom() {
    if (!current) return;
    current.stop();
    for (const timer of current.typing.values()) clearTimeout(timer);
    clearTimeout(readTimer);
  }

  function renderHead() {
    el("room-title").textContent = current ? roomLabel(current.room) : "Pick a room";
    // Direct conversations cannot be left; open rooms stay readable to everyone.
    el("leave").hidden = !current || current.room.direct || current.room.open;
  }

  /** The room on screen went (I left it, or was removed): say so, show none. */
  function closeRoom(notice) {
    stopRoom();
    current = null;
    renderHead();
    el("messages").replaceChildren();
    el("messages").dataset.room = "";
    delete el("messages").dataset.complete;
    el("members").replaceChildren();
    el("typing").textContent = "";
    el("error").textContent = "";
    el("notice").textContent = notice;
    el("text").disabled = true;
    el("send").querySelector("button").disabled = true;
    renderRooms();
  }

  async function openRoom(room) {
    stopRoom();
    room = roomBySlug(room.slug) || room;
    current = { room, stop: () => {}, messages: new Map(), typing: new Map(), generation: 0, readSent: 0 };
    renderHead();
    el("messages").dataset.room = room.slug;
    el("messages").replaceChildren();
    delete el("messages").dataset.complete;
    el("error").textContent = "";
    el("notice").textContent = "";
    for (const item of el("rooms").children) {
      item.classList.toggle("current", item.dataset.slug === room.slug);
    }
    calls.watch(room);
    const opened = current;
    // Subscribe first, then read the history: nothing falls between the two, and a
    // message in both is the same id.
    opened.stop = client.subscribe(room.topic, (data) => opened === current && addMessages([data]), {
      onReset: () => opened === current && loadHistory(opened, { reset: true }),
      onPresence: (members) => opened === current && renderMembers(members),
      onJoin: () => opened === current && renderMembers(client.members(room.topic)),
      onLeave: () => opened === current && renderMembers(client.members(room.topic)),
      onEphemeral: (data) => opened === current && data && data.type === "typing" && showTyping(data.user),
    });
    await loadHistory(opened);
    if (opened !== current) return; // another room was opened, or this one closed, meanwhile
    el("text").disabled = false;
    el("send").querySelector("button").disabled = false;
    el("text").focus();
  }

  // --- the room list: GET /chat/api/rooms, then kept live from user.<me> ----------------

  function roomLabel(room) {
    return room.direct && room.with ? `@${room.with.name}` : room.title || room.slug;
  }

  function roomBySlug(slug) {
    return rooms.find((room) => room.slug === slug);
  }

  function sortRooms() {
    rooms.sort((a, b) => (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0)); // the server's order
  }

  function renderRooms() {
    let total = 0;
    el("rooms").replaceChildren(
      ...rooms.map((room) => {
        const unread = room.unread || 0;
        total += unread;
        const item = document.createElement("li");
        item.dataset.slug = room.slug;
        item.dataset.unread = String(unread);
        if (room.direct) item.dataset.direct = "true";
        item.classList.toggle("current", Boolean(current && current.room.slug === room.slug));
        const button = document.createElement("button");
        button.type = "button";
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = roomLabel(room);
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = String(unread);
        badge.hidden = unread === 0;
        badge.setAttribute("aria-label", `${unread} unread`);
        button.append(name, " ", badge);
        button.addEventListener("click", () => openRoom(roomBySlug(room.slug) || room));
        item.append(button);
        return item;
      }),
    );
    document.title = `${total ? `(${total}) ` : ""}Chat · Django push`;
  }

  /**
   * A room added to my list or changed (title, unread...): the list, and the head if on
   * screen. ``shared``: data for every page (chat._rooms), which does not know my counts.
   */
  function upsertRoom(room, { shared = false } = {}) {
    const known = roomBySlug(room.slug);
    if (known && shared) for (const field of SHARED_FIELDS) known[field] = room[field];
    else if (known) Object.assign(known, room);
    else rooms.push({ ...room });
    sortRooms();
    if (current && current.room.slug === room.slug) {
      current.room = roomBySlug(room.slug);
      renderHead();
    }
    renderRooms();
  }

  let leaving = null; // the slug of the room this page is leaving, until the answer

  function removeRoom(slug, notice) {
    const known = roomBySlug(slug);
    rooms = rooms.filter((room) => room.slug !== slug);
    if (current && current.room.slug === slug) closeRoom(notice(known || { slug }));
    else renderRooms();
  }

  /** A push on user.<me> or (``shared``) on the open rooms' topic. */
  function onPersonal(data, shared = false) {
    if (heldPushes) {
      heldPushes.push([data, shared]); // applied on top of the list being fetched
      return;
    }
    if (!data || typeof data !== "object") return;
    if (data.type === "rooms" && data.room && typeof data.room.slug === "string") {
      if (data.event === "removed") {
        // This page's own Leave may be answered after its push: it still says "You left".
        const verb = data.room.slug === leaving ? "You left" : "You are no longer in";
        removeRoom(data.room.slug, (room) => `${verb} ${roomLabel(data.room.title ? data.room : room)}`);
      } else if (data.event === "added" || data.event === "changed") {
        upsertRoom(data.room, { shared });
      }
    } else if (data.type === "unread" && typeof data.room === "string") {
      setUnread(data.room, data.unread, data.last_read);
    }
  }

  async function loadRooms() {
    const held = [];
    heldPushes = held;
    let answer;
    try {
      answer = await api(config.roomsUrl);
    } catch (error) {
      if (heldPushes === held) heldPushes = null;
      el("error").textContent = `could not load the rooms (${error.status || error.message})`;
      return;
    }
    if (heldPushes !== held) return; // a later reload is under way: its answer counts
    heldPushes = null;
    rooms = answer.rooms;
    sortRooms();
    for (const [data, shared] of held) onPersonal(data, shared);
    if (current) {
      const fresh = roomBySlug(current.room.slug);
      if (!fresh) {
        closeRoom(`You are no longer in ${roomLabel(current.room)}`);
        return;
      }
      current.room = fresh;
      renderHead();
    }
    renderRooms();
  }

  // Numbered pushes for me (several listeners share the topic: calls.js has one too), and
  // open rooms made or changed, for every page.
  client.subscribe(`user.${me}`, (data) => onPersonal(data), { onReset: () => loadRooms() });
  if (config.openRoomsTopic) {
    client.subscribe(config.openRoomsTopic, (data) => onPersonal(data, true), { onReset: () => loadRooms() });
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

  el("leave").addEventListener("click", async () => {
    if (!current || current.room.direct) return;
    const room = current.room;
    el("leave").disabled = true;
    leaving = room.slug;
    try {
      await api(urls.leave(room.slug), {});
      removeRoom(room.slug, () => `You left ${roomLabel(room)}`); // the push says so too
    } catch (error) {
      el("error").textContent = error.message;
    } finally {
      leaving = null;
      el("leave").disabled = false;
    }
  });

  const searchPeople = peopleSearch(el("people-q"), el("people"), () => PERSON_ACTIONS);
  el("people-search").addEventListener("submit", (event) => {
    event.preventDefault(); // Enter searches at once, without leaving the page
    searchPeople();
  });
  searchPeople();

  // New room: only on the page of a user who may make one (chat.add_room).
  const newRoom = config.canAddRoom ? el("new-room") : null;
  if (newRoom) {
    const chosen = new Map(); // user id -> person
    const remove = {
      action: "remove",
      label: "Remove",
      run: (person) => {
        chosen.delete(person.id);
        renderChosen();
      },
    };
    const add = {
      action: "add",
      label: "Add",
      run: (person) => {
        chosen.set(person.id, person);
        renderChosen();
      },
    };
    const renderChosen = () => {
      el("new-room-members").replaceChildren(...Array.from(chosen.values(), (person) => personItem(person, [remove])));
    };
    const searchMembers = peopleSearch(el("new-room-q"), el("new-room-people"), () => [add]);
    el("new-room-q").addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault(); // Enter in the search searches; it does not make the room yet
      searchMembers();
    });
    searchMembers();
    el("new-room-box").hidden = false;
    newRoom.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submit = newRoom.querySelector("button[type='submit']");
      el("new-room-error").textContent = "";
      submit.disabled = true;
      try {
        const { room } = await api(config.roomsUrl, {
          title: el("new-room-title").value.trim(),
          open: el("new-room-open").checked,
          members: Array.from(chosen.keys()),
        });
        upsertRoom(room);
        newRoom.reset();
        chosen.clear();
        renderChosen();
        el("new-room-box").open = false;
        await openRoom(roomBySlug(room.slug) || room);
      } catch (error) {
        el("new-room-error").textContent = error.message;
      } finally {
        submit.disabled = false;
      }
    });
  }

  start();
})();
