/*!
 * rookery.js — browser client for Rookery with the Scaledrone JavaScript API.
 *
 * Load it as a classic script; it defines `window.Scaledrone` (and the older
 * spelling `window.ScaleDrone`). No build step, no dependencies.
 *
 *   const drone = new Scaledrone('my-channel', { authenticate: id => fetchToken(id) });
 *   const room = drone.subscribe('observable-room', { historyCount: 50 });
 *   room.on('data', (data, member) => console.log(member && member.authData, data));
 *   drone.publish({ room: 'observable-room', message: 'hello' });
 *
 * Beyond the official client it survives network drops: it reconnects with
 * backoff, handshakes again, fetches a fresh token through the optional
 * `authenticate` callback, resubscribes and recovers the messages it missed
 * (the `history_since` extension, PROTOCOL.md §7). See docs/rookery-js.md.
 */
(function (global) {
  'use strict';

  // Reconnect backoff: first retry quickly (most drops are a restart or a
  // blip), then double up to a ceiling; jitter spreads a crowd of clients
  // that all lost the same server so they do not stampede it together.
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  // A socket that opened but never answered the handshake is as good as dead.
  var HANDSHAKE_TIMEOUT_MS = 10000;
  // Message ids remembered per room to drop duplicates when recovery and
  // live delivery overlap after a reconnect.
  var SEEN_IDS_PER_ROOM = 512;
  // Publishes made while offline are kept and sent after reconnecting, up to
  // this many; beyond it the oldest are failed rather than growing forever.
  var MAX_QUEUED_PUBLISHES = 1000;
  // Refresh a token this long before it expires (or at 80 % of its lifetime
  // when that is shorter), so a slow auth service still answers in time.
  var REFRESH_LEAD_MS = 60000;

  /** A small event emitter: on/once/off/emit, listeners called in order. */
  function Emitter() {
    this._listeners = Object.create(null);
  }
  Emitter.prototype.on = function (event, fn) {
    (this._listeners[event] || (this._listeners[event] = [])).push(fn);
    return this;
  };
  Emitter.prototype.once = function (event, fn) {
    var self = this;
    function wrapper() {
      self.off(event, wrapper);
      return fn.apply(this, arguments);
    }
    wrapper.listener = fn;
    return this.on(event, wrapper);
  };
  Emitter.prototype.off = function (event, fn) {
    if (event === undefined) {
      this._listeners = Object.create(null);
      return this;
    }
    var list = this._listeners[event];
    if (!list) return this;
    if (fn === undefined) {
      delete this._listeners[event];
      return this;
    }
    this._listeners[event] = list.filter(function (l) {
      return l !== fn && l.listener !== fn;
    });
    return this;
  };
  Emitter.prototype.listenerCount = function (event) {
    var list = this._listeners[event];
    return list ? list.length : 0;
  };
  /** Calls every listener; one throwing listener must not starve the others. */
  Emitter.prototype.emit = function (event) {
    var list = this._listeners[event];
    if (!list || !list.length) return false;
    var args = Array.prototype.slice.call(arguments, 1);
    list.slice().forEach(function (fn) {
      try {
        fn.apply(null, args);
      } catch (err) {
        setTimeout(function () { throw err; }); // report it without breaking delivery
      }
    });
    return true;
  };

  function makeError(message, props) {
    var err = new Error(message);
    if (props) {
      Object.keys(props).forEach(function (k) { if (props[k] !== undefined) err[k] = props[k]; });
    }
    return err;
  }

  /** Reads the `exp` claim of a JWT in milliseconds, or null. Never verifies. */
  function tokenExpiryMs(jwt) {
    try {
      var part = String(jwt).split('.')[1];
      var b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      while (b64.length % 4) b64 += '=';
      var json = decodeURIComponent(Array.prototype.map.call(atob(b64), function (c) {
        return '%' + ('00' + c.charCodeAt(0).toString(16)).slice(-2);
      }).join(''));
      var exp = JSON.parse(json).exp;
      if (typeof exp !== 'number') return null;
      // Same rule as the server: values above 10^11 are already milliseconds.
      return exp > 1e11 ? exp : exp * 1000;
    } catch (_) {
      return null;
    }
  }

  function defaultUrl() {
    if (!global.location || !/^https?:$/.test(global.location.protocol)) {
      throw new Error('Scaledrone: pass options.url when not running on an http(s) page');
    }
    var scheme = global.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + global.location.host + '/v3/websocket';
  }

  /* ------------------------------------------------------------------ Room */

  /**
   * A subscription. Created by `drone.subscribe`; events: open, message, data,
   * history_message, members, member_join, member_leave, resume, error.
   */
  function Room(drone, name, options) {
    Emitter.call(this);
    this.name = name;
    this.historyCount = options.historyCount || 0;
    /** Current members of an observable room: [{id, authData?, clientData?}]. */
    this.members = [];
    this._drone = drone;
    this._opened = false; // 'open' already emitted once
    this._sent = false; // a subscribe frame is on the current socket
    this._recovering = false; // history frames now are a gap fill, not initial history
    this._lastId = null; // last message id delivered, for history_since
    this._seen = new Set();
    this._seenOrder = [];
  }
  Room.prototype = Object.create(Emitter.prototype);
  Room.prototype.constructor = Room;

  /** Leaves the room (same as `drone.unsubscribe(room.name)`). */
  Room.prototype.unsubscribe = function (callback) {
    this._drone.unsubscribe(this.name, callback);
  };

  Room.prototype._member = function (clientId) {
    if (clientId === undefined || clientId === null) return undefined;
    for (var i = 0; i < this.members.length; i++) {
      if (this.members[i].id === clientId) return this.members[i];
    }
    return undefined;
  };

  /** Records an id; false when it was already delivered (recovery overlap). */
  Room.prototype._remember = function (id) {
    if (id === undefined || id === null) return true;
    if (this._seen.has(id)) return false;
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > SEEN_IDS_PER_ROOM) this._seen.delete(this._seenOrder.shift());
    this._lastId = id;
    return true;
  };

  Room.prototype._toMessage = function (frame) {
    var msg = {
      data: frame.message,
      id: frame.id,
      timestamp: frame.timestamp,
      clientId: frame.client_id,
      member: this._member(frame.client_id),
    };
    // The publisher's username when a logged-in member sent it (PROTOCOL.md §11).
    if (typeof frame.user === 'string') msg.user = frame.user;
    return msg;
  };

  Room.prototype._deliver = function (frame, recovered) {
    if (!this._remember(frame.id)) return;
    var msg = this._toMessage(frame);
    if (recovered) msg.recovered = true;
    this.emit('message', msg);
    this.emit('data', msg.data, msg.member);
  };

  Room.prototype._onHistory = function (frame) {
    if (this._recovering) {
      // A gap fill after reconnecting: the app never saw these, so they are
      // ordinary messages to it, in order, minus any it did see.
      this._deliver(frame, true);
      return;
    }
    if (!this._remember(frame.id)) return;
    var msg = this._toMessage(frame);
    msg.index = frame.index;
    this.emit('history_message', msg);
  };

  Room.prototype._setMembers = function (list) {
    this.members = Array.isArray(list) ? list.slice() : [];
    this.emit('members', this.members.slice());
  };

  Room.prototype._join = function (member) {
    if (!member) return;
    this.members = this.members.filter(function (m) { return m.id !== member.id; });
    this.members.push(member);
    this.emit('member_join', member);
  };

  Room.prototype._leave = function (member) {
    if (!member) return;
    var known = this._member(member.id);
    this.members = this.members.filter(function (m) { return m.id !== member.id; });
    this.emit('member_leave', known || member);
  };

  /* ------------------------------------------------------------ Scaledrone */

  /**
   * new Scaledrone(channelId, {url, data, autoReconnect, authenticate})
   *
   * Connects immediately. `data` is sent as the handshake's client_data (the
   * member's clientData). `authenticate(clientId)` may return a JWT or a
   * promise of one; when given, the client authenticates by itself after
   * every handshake and before the token expires.
   */
  function Scaledrone(channelId, options) {
    if (!(this instanceof Scaledrone)) return new Scaledrone(channelId, options);
    Emitter.call(this);
    if (typeof channelId !== 'string' || !channelId) throw new Error('Scaledrone: channel id required');
    options = options || {};
    this.channelId = channelId;
    /** Assigned by the server at each handshake; changes after a reconnect. */
    this.clientId = null;
    /** 'connecting' | 'open' | 'reconnecting' | 'closed' */
    this.state = 'connecting';
    this._url = options.url || defaultUrl();
    this._data = options.data;
    this._autoReconnect = options.autoReconnect !== false;
    this._tokenSource = typeof options.authenticate === 'function' ? options.authenticate : null;

    this._ws = null;
    this._nextCallback = 0;
    this._pending = new Map(); // callback id -> handler(frame) for the current socket
    this._rooms = new Map(); // name -> Room the app wants to be subscribed to
    this._publishQueue = []; // [{frame, callback}] waiting until ready
    this._handshaken = false;
    this._requireAuth = false;
    this._authenticated = false;
    this._everOpened = false;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._handshakeTimer = null;
    this._refreshTimer = null;
    this._token = null;
    this._closing = false;
    this._fatal = null; // an Error when the server refused us for good
    this._reportedFailure = false;

    var self = this;
    // When the browser comes back online there is no point waiting out the
    // backoff: try now.
    this._onOnline = function () {
      if (self._reconnectTimer !== null) {
        clearTimeout(self._reconnectTimer);
        self._reconnectTimer = null;
        self._connect();
      }
    };
    if (global.addEventListener) global.addEventListener('online', this._onOnline);

    this._connect();
  }
  Scaledrone.prototype = Object.create(Emitter.prototype);
  Scaledrone.prototype.constructor = Scaledrone;

  /* ---------------------------------------------------- public methods */

  /**
   * Presents a JWT. Allowed at any time after 'open'; again later to refresh
   * permissions. Result: the 'authenticate' event (and `callback(error)`).
   */
  Scaledrone.prototype.authenticate = function (token, callback) {
    var self = this;
    if (!this._handshaken) {
      var err = makeError('Cannot authenticate before the connection is open', { request: 'authenticate' });
      this._report(err, callback, null);
      return;
    }
    this._token = token;
    var socket = this._ws;
    this._request({ type: 'authenticate', token: token }, function (frame) {
      if (socket !== self._ws) return; // a reply from a socket we already gave up on
      if (frame.error !== undefined) {
        // A failed authenticate leaves any earlier authentication in force.
        var err = makeError(String(frame.error), { request: 'authenticate', frame: frame });
        self._report(err, callback, 'authenticate');
        self._scheduleRefreshRetry();
        return;
      }
      var first = !self._authenticated;
      self._authenticated = true;
      self._scheduleRefresh(token);
      if (callback) callback(null);
      self.emit('authenticate', null);
      if (first) self._onReady();
    });
  };

  /**
   * Subscribes to a room and returns it. Calling it again for the same room
   * returns the same Room. Options: {historyCount}.
   */
  Scaledrone.prototype.subscribe = function (name, options) {
    if (typeof name !== 'string' || !name) throw new Error('Scaledrone: room name required');
    var existing = this._rooms.get(name);
    if (existing) return existing;
    var room = new Room(this, name, options || {});
    this._rooms.set(name, room);
    if (this._ready()) this._sendSubscribe(room);
    return room;
  };

  /** Leaves a room; no more events are emitted on it. */
  Scaledrone.prototype.unsubscribe = function (name, callback) {
    var room = this._rooms.get(name);
    if (!room) {
      if (callback) callback(null);
      return;
    }
    this._rooms.delete(name);
    room.members = [];
    if (!room._sent || !this._ready()) {
      if (callback) callback(null);
      return;
    }
    room._sent = false;
    var self = this;
    this._request({ type: 'unsubscribe', room: name }, function (frame) {
      if (frame.error !== undefined) {
        self._report(makeError(String(frame.error), { request: 'unsubscribe', room: name, frame: frame }), callback, null);
      } else if (callback) {
        callback(null);
      }
    });
  };

  /**
   * Publishes `message` (any JSON value) to `room`. Queued until the
   * connection is ready. `callback(error)` reports the server's verdict; a
   * refused publish without a callback becomes an 'error' event.
   */
  Scaledrone.prototype.publish = function (params, callback) {
    if (!params || typeof params.room !== 'string' || !params.room) {
      throw new Error('Scaledrone: publish needs {room, message}');
    }
    if (!('message' in params)) throw new Error('Scaledrone: publish needs {room, message}');
    if (this.state === 'closed') {
      this._report(makeError('Connection is closed', { request: 'publish', room: params.room }), callback, null);
      return;
    }
    var item = { frame: { type: 'publish', room: params.room, message: params.message }, callback: callback };
    if (this._ready()) {
      this._sendPublish(item);
      return;
    }
    this._publishQueue.push(item);
    if (this._publishQueue.length > MAX_QUEUED_PUBLISHES) {
      var dropped = this._publishQueue.shift();
      this._report(makeError('Publish queue full while offline', { request: 'publish', room: dropped.frame.room }), dropped.callback, null);
    }
  };

  /** Closes the connection for good; emits 'close' once. */
  Scaledrone.prototype.close = function () {
    if (this.state === 'closed') return;
    this._closing = true;
    this._clearTimers();
    if (global.removeEventListener) global.removeEventListener('online', this._onOnline);
    var ws = this._ws;
    if (ws && ws.readyState <= 1) {
      ws.close(1000, 'client closed');
      // 'close' is emitted from the socket's close handler.
    } else {
      this._finish({ code: 1000, reason: 'client closed', wasClean: true });
    }
  };

  /* ------------------------------------------------- connection cycle */

  Scaledrone.prototype._connect = function () {
    var self = this;
    this._reconnectTimer = null;
    this._handshaken = false;
    this._authenticated = false;
    this._pending = new Map();
    var ws;
    try {
      ws = new WebSocket(this._url);
    } catch (err) {
      // A malformed URL throws synchronously; retrying will not fix it.
      this._fatal = makeError(err.message, { request: 'connect' });
      this._report(this._fatal, null, null);
      this._finish({ code: 1006, reason: err.message, wasClean: false });
      return;
    }
    this._ws = ws;
    ws.onopen = function () {
      if (ws !== self._ws) return;
      var frame = { type: 'handshake', channel: self.channelId };
      if (self._data !== undefined) frame.client_data = self._data;
      self._handshakeTimer = setTimeout(function () {
        self._handshakeTimer = null;
        if (ws === self._ws && !self._handshaken) ws.close(4000, 'handshake timeout');
      }, HANDSHAKE_TIMEOUT_MS);
      self._request(frame, function (reply) { self._onHandshake(ws, reply); });
    };
    ws.onmessage = function (event) {
      if (ws !== self._ws) return;
      self._onFrame(event.data);
    };
    ws.onclose = function (event) {
      if (ws !== self._ws) return;
      self._onSocketClose(event);
    };
    // 'error' on a WebSocket carries no detail and is always followed by
    // 'close', which is where we act.
    ws.onerror = function () {};
  };

  Scaledrone.prototype._onHandshake = function (ws, reply) {
    clearTimeout(this._handshakeTimer);
    this._handshakeTimer = null;
    if (reply.error !== undefined) {
      // The server closes the socket after a refused handshake (unknown
      // channel); reconnecting would only be refused again.
      this._fatal = makeError(String(reply.error), { request: 'handshake', frame: reply });
      this._report(this._fatal, null, this._everOpened ? null : 'open');
      return;
    }
    this._handshaken = true;
    this._attempt = 0;
    this._reportedFailure = false;
    this.clientId = reply.client_id;
    this._requireAuth = reply.require_auth === true;
    this.state = 'open';
    var reconnected = this._everOpened;
    this._everOpened = true;
    // Every room goes out again on this socket, recovering what it missed.
    this._rooms.forEach(function (room) { room._sent = false; });

    if (reconnected) this.emit('reconnect');
    else this.emit('open', null);

    if (ws !== this._ws || !this._handshaken) return; // a listener closed us
    if (this._tokenSource) this._fetchAndAuthenticate();
    if (this._ready()) this._onReady();
  };

  /** True when subscribes and publishes may go out on the wire. */
  Scaledrone.prototype._ready = function () {
    return this._handshaken && (!this._requireAuth || this._authenticated);
  };

  /** Flushes what waited for the handshake (and authentication). */
  Scaledrone.prototype._onReady = function () {
    var self = this;
    this._rooms.forEach(function (room) {
      if (!room._sent) self._sendSubscribe(room);
    });
    var queue = this._publishQueue;
    this._publishQueue = [];
    queue.forEach(function (item) { self._sendPublish(item); });
  };

  Scaledrone.prototype._sendSubscribe = function (room) {
    var self = this;
    var frame = { type: 'subscribe', room: room.name };
    var resuming = room._opened;
    if (resuming && room._lastId !== null) {
      frame.history_since = room._lastId;
    } else if (room.historyCount) {
      // First subscribe, or a resume of a room where nothing has arrived
      // yet: then everything in history is news to the app.
      frame.history_count = room.historyCount;
    }
    room._sent = true;
    room._recovering = resuming;
    this._request(frame, function (reply) {
      if (self._rooms.get(room.name) !== room) return; // unsubscribed meanwhile
      if (reply.error !== undefined) {
        room._sent = false;
        var err = makeError(String(reply.error), { request: 'subscribe', room: room.name, frame: reply });
        if (room._opened) self._report(err, null, null, room);
        else self._report(err, null, 'open', room);
        return;
      }
      if (!room._opened) {
        room._opened = true;
        room.emit('open', null);
      } else {
        // `recovered` is true/false when we asked for a gap fill, undefined
        // when there was nothing to recover from (no message seen yet).
        room.emit('resume', { recovered: frame.history_since !== undefined ? reply.recovered === true : undefined });
      }
    });
  };

  Scaledrone.prototype._sendPublish = function (item) {
    var self = this;
    var room = item.frame.room;
    // Always ask for a reply so a refusal is tied to its message and room.
    this._request(item.frame, function (reply) {
      if (reply.error !== undefined) {
        self._report(makeError(String(reply.error), { request: 'publish', room: room, frame: reply }), item.callback, null);
      } else if (item.callback) {
        item.callback(null);
      }
    }, function lost() {
      // The socket went away before the server answered: the message may or
      // may not have been delivered, and resending could duplicate it.
      self._report(makeError('Connection lost before the server confirmed the publish', { request: 'publish', room: room }), item.callback, null);
    });
  };

  /** Sends a frame with a fresh callback id and remembers its handler. */
  Scaledrone.prototype._request = function (frame, onReply, onLost) {
    var id = this._nextCallback++;
    frame.callback = id;
    this._pending.set(id, { onReply: onReply, onLost: onLost });
    this._send(frame);
  };

  Scaledrone.prototype._send = function (frame) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(frame));
  };

  Scaledrone.prototype._onFrame = function (text) {
    var frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      this._report(makeError('Unreadable frame from server', { request: 'connection' }), null, null);
      return;
    }
    if (!frame || typeof frame !== 'object') return;

    if (typeof frame.callback === 'number') {
      var pending = this._pending.get(frame.callback);
      if (pending) {
        this._pending.delete(frame.callback);
        pending.onReply(frame);
      }
      return;
    }

    var room = typeof frame.room === 'string' ? this._rooms.get(frame.room) : undefined;
    switch (frame.type) {
      case 'publish':
        if (room) room._deliver(frame, false);
        return;
      case 'history_message':
        if (room) room._onHistory(frame);
        return;
      case 'observable_members':
        if (room) room._setMembers(frame.data);
        return;
      case 'observable_member_join':
        if (room) room._join(frame.data);
        return;
      case 'observable_member_leave':
        if (room) room._leave(frame.data);
        return;
    }

    if (frame.error !== undefined) {
      var err = makeError(String(frame.error), { request: 'connection', room: frame.room, frame: frame });
      if (room) {
        // The server dropped this subscription (permissions changed on
        // re-authentication, or the token expired under `expiry = enforce`).
        this._rooms.delete(room.name);
        room._sent = false;
        room.members = [];
        this._report(err, null, null, room);
      } else {
        if (frame.error === 'JWT expired') {
          // Enforced expiry cost us every subscription; the app (or our
          // token source) must authenticate again before resubscribing.
          this._authenticated = false;
          this._rooms.forEach(function (r) { r._sent = false; });
          if (this._tokenSource) this._fetchAndAuthenticate();
        }
        this._report(err, null, null);
      }
    }
  };

  Scaledrone.prototype._onSocketClose = function (event) {
    var wasOpen = this._handshaken;
    this._ws = null;
    this._handshaken = false;
    this._authenticated = false;
    clearTimeout(this._handshakeTimer);
    clearTimeout(this._refreshTimer);
    this._handshakeTimer = this._refreshTimer = null;
    // Replies that will never come: publishes get told, the rest are redone.
    var pending = this._pending;
    this._pending = new Map();
    pending.forEach(function (p) { if (p.onLost) p.onLost(); });
    this._rooms.forEach(function (room) { room._sent = false; });

    var reason = (event && event.reason) || '';
    var retry = this._autoReconnect && !this._closing && !this._fatal && reason.indexOf('exceeded') === -1;
    if (!retry) {
      this._finish(event);
      return;
    }
    if (wasOpen) {
      this.state = 'reconnecting';
      this.emit('disconnect', event);
    } else if (!this._everOpened && !this._reportedFailure) {
      // Only the first connection's failure is news; retries after a
      // 'disconnect' are expected to fail until the server is back.
      this._reportedFailure = true;
      this._report(makeError('Could not connect to ' + this._url + '; retrying', { request: 'connect' }), null, null);
    }
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, this._attempt));
    delay = delay / 2 + Math.random() * delay / 2;
    this._attempt++;
    var self = this;
    this._reconnectTimer = setTimeout(function () { self._connect(); }, delay);
  };

  Scaledrone.prototype._finish = function (event) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._clearTimers();
    if (global.removeEventListener) global.removeEventListener('online', this._onOnline);
    var queue = this._publishQueue;
    this._publishQueue = [];
    var self = this;
    queue.forEach(function (item) {
      self._report(makeError('Connection closed before the message was sent', { request: 'publish', room: item.frame.room }), item.callback, null);
    });
    this.emit('close', event);
  };

  Scaledrone.prototype._clearTimers = function () {
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._handshakeTimer);
    clearTimeout(this._refreshTimer);
    this._reconnectTimer = this._handshakeTimer = this._refreshTimer = null;
  };

  /* ------------------------------------------------------ tokens */

  Scaledrone.prototype._fetchAndAuthenticate = function () {
    var self = this;
    var socket = this._ws;
    var clientId = this.clientId;
    Promise.resolve()
      .then(function () { return self._tokenSource(clientId); })
      .then(function (token) {
        if (socket !== self._ws || !self._handshaken) return; // connection changed meanwhile
        self.authenticate(token);
      }, function (cause) {
        if (socket !== self._ws) return;
        var err = makeError((cause && cause.message) || String(cause), { request: 'authenticate', cause: cause });
        self._report(err, null, 'authenticate');
        self._scheduleRefreshRetry();
      });
  };

  Scaledrone.prototype._scheduleRefresh = function (token) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (!this._tokenSource) return;
    var exp = tokenExpiryMs(token);
    if (exp === null) return;
    var left = exp - Date.now();
    var lead = Math.min(REFRESH_LEAD_MS, Math.max(0, left) * 0.2);
    this._setRefreshTimer(left - lead);
  };

  /** After a failed refresh try again later, while the connection lasts. */
  Scaledrone.prototype._scheduleRefreshRetry = function () {
    if (!this._tokenSource || !this._handshaken) return;
    this._setRefreshTimer(10000);
  };

  Scaledrone.prototype._setRefreshTimer = function (ms) {
    var self = this;
    clearTimeout(this._refreshTimer);
    // setTimeout overflows above 2^31-1 ms (~24.8 days); such tokens get
    // re-armed when that long timer fires.
    var wait = Math.max(1000, Math.min(ms, 0x7fffffff));
    this._refreshTimer = setTimeout(function () {
      self._refreshTimer = null;
      if (!self._handshaken) return;
      var exp = tokenExpiryMs(self._token);
      if (ms > 0x7fffffff && exp !== null && exp - Date.now() > REFRESH_LEAD_MS * 2) {
        self._scheduleRefresh(self._token);
        return;
      }
      self._fetchAndAuthenticate();
    }, wait);
  };

  /* ------------------------------------------------------ errors */

  /**
   * Routes an error to exactly one place so nothing is lost and nothing is
   * reported twice: the request's callback if given; else the listeners of
   * `event` on the room (or drone) if anyone listens; else the room's
   * 'error'; else the drone's 'error'; else the console.
   */
  Scaledrone.prototype._report = function (err, callback, event, room) {
    if (callback) {
      callback(err);
      return;
    }
    var target = room || this;
    if (event && target.listenerCount(event) > 0) {
      target.emit(event, err);
      return;
    }
    if (room && room.listenerCount('error') > 0) {
      room.emit('error', err);
      return;
    }
    if (this.listenerCount('error') > 0) {
      this.emit('error', err);
      return;
    }
    if (global.console) global.console.error('Scaledrone:', err);
  };

  // Exposed for tests and for apps that want to read a token's expiry.
  Scaledrone.tokenExpiry = tokenExpiryMs;
  Scaledrone.Room = Room;

  global.Scaledrone = Scaledrone;
  global.ScaleDrone = Scaledrone;
})(typeof window !== 'undefined' ? window : globalThis);
