/**
 * Live updates: one change feed for the whole app. Events are collected and the current page's
 * `refresh` runs once per burst (debounced, with a ceiling so a steady stream still repaints).
 */
import { openEvents } from './api.js';

const QUIET_MS = 250;
const MAX_WAIT_MS = 1000;
const RECENT_MAX = 30;

/** The newest changes seen since the dashboard opened (newest first), for the overview. */
export const recentChanges = [];

let listener = null;
let batch = [];
let timer = null;
let firstAt = 0;
let close = null;

/** Sets who hears about changes: `{ wants(event) → bool, refresh(events) → Promise }`, or null. */
export function setLiveListener(l) {
  listener = l;
  batch = [];
}

function flush() {
  timer = null;
  const events = batch;
  batch = [];
  if (listener && events.length) listener.refresh(events);
}

function onEvent(e) {
  if (e.kind !== 'log') {
    recentChanges.unshift({ ...e, at: new Date() });
    recentChanges.length = Math.min(recentChanges.length, RECENT_MAX);
  }
  if (!listener?.wants(e)) return;
  if (!batch.length) firstAt = Date.now();
  batch.push(e);
  clearTimeout(timer);
  timer = setTimeout(flush, Math.max(0, Math.min(QUIET_MS, firstAt + MAX_WAIT_MS - Date.now())));
}

export function startLive(indicator) {
  stopLive();
  close = openEvents(onEvent, (state, recovered) => {
    indicator.textContent = state;
    indicator.className = `live state-${state}`;
    // Events sent while we were disconnected are lost: repaint from the API.
    if (recovered && listener) listener.refresh([]);
  });
}

export function stopLive() {
  close?.();
  close = null;
  clearTimeout(timer);
  batch = [];
}
