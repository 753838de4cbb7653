// The page: a form that starts and stops schedules, and live views of the ticks.
import { TimingChart } from "./chart.js";
import { TickerConnection } from "./connection.js";
import { LatenessFit, MAX_TICKS_SHOWN, ScheduleStats, formatClock, formatMs } from "./client-stats.js";

const $ = (id) => document.getElementById(id);
const form = $("controls");
const intervalInput = $("interval");
const countInput = $("count");
const alignInput = $("align");
// One element per problem: each field's aria-describedby names its own.
const problemBoxes = { interval: $("interval-problem"), count: $("count-problem"), other: $("other-problem") };
const statusBox = $("status");
const tickList = $("ticks");
const scheduleState = $("schedule-state");
const chart = new TimingChart($("chart"));

// Limits announced by the server's hello (they also set the form's min/max). The
// page has none of its own: before the first hello it cannot check a start.
let limits = null; // {min_interval, max_interval, max_count}

// A plan is a schedule the user asked for: {interval, count, align, anchor, last,
// lastSeq}. The first `started` answering it puts it on the server's grid:
// `anchor`, and `last`, its final slot (null when unbounded); `lastSeq` is the
// newest of its slots behind us (received, skipped or lost). With them a
// reconnect resumes the same grid, to the same final slot, on any server.
// `wanted`: the plan the user has not stopped, resumed after a reconnect.
let wanted = null;
// Starts sent and not yet answered by `started` or `error`, oldest first: the
// server answers frames in order, and this page's stops are never refused.
let pendingStarts = []; // [{plan, resumed}]
// `current`: the server's schedule whose ticks we are showing.
let current = null; // {id, plan, fit, lastArrival, skippedHere, lostBefore}
let stats = new ScheduleStats();

// DOM work is batched per animation frame; the queue is capped, so a hidden
// tab (no animation frames) cannot grow memory however long it runs.
let queued = [];
let summaryDirty = true;
let lastSummary = 0;

const connection = new TickerConnection(new URL("ws", location.href).href.replace(/^http/, "ws"), {
  onStatus(text, state) {
    statusBox.textContent = text;
    $("connection").dataset.state = state;
  },
  onCountdown(text) {
    const countdown = $("countdown"); // aria-hidden: for the eyes, never announced
    if (countdown.textContent !== text) countdown.textContent = text;
  },
  onMessage: handleMessage,
});

/** Show what is wrong, each problem in its own place; none clears them all. */
function showProblems({ interval = "", count = "", other = "" } = {}) {
  problemBoxes.interval.textContent = interval;
  problemBoxes.count.textContent = count;
  problemBoxes.other.textContent = other;
}

function handleMessage(message) {
  switch (message.type) {
    case "hello":
      limits = message;
      intervalInput.min = String(message.min_interval);
      intervalInput.max = String(message.max_interval);
      countInput.max = String(message.max_count);
      resume();
      break;
    case "started":
      onStarted(message);
      break;
    case "tick":
      if (current !== null && message.id === current.id) onTick(message);
      break;
    case "done":
      if (current !== null && message.id === current.id) onDone(message);
      break;
    case "stopped":
      if (current !== null && message.id === current.id) {
        current = null;
        setScheduleState("stopped");
      }
      break;
    case "error":
      onError(message);
      break;
    default:
      break; // a newer server may send types we do not know
  }
}

function newPlan(interval, count, align) {
  return { interval, count, align, anchor: null, last: null, lastSeq: null };
}

/** The start frame for `plan`: once a `started` has put it on a grid, that grid
 * and its final slot (docs/protocol.md, resuming). */
function startMessage(plan) {
  const message = { type: "start", interval: plan.interval };
  if (plan.anchor !== null) {
    message.anchor = plan.anchor;
    if (plan.last !== null) message.last = plan.last;
  } else {
    if (plan.count !== null) message.count = plan.count;
    if (plan.align) message.anchor = 0; // slots on whole multiples of the interval
  }
  return message;
}

function start(plan) {
  wanted = plan;
  if (connection.send(startMessage(plan))) {
    pendingStarts.push({ plan, resumed: plan.anchor !== null });
  } else {
    // Not connected: it goes out as soon as the server says hello.
    setScheduleState("waiting for the connection");
  }
}

function resume() {
  pendingStarts = []; // sent on the old connection: never to be answered
  current = null; // its ids mean nothing on this connection
  if (wanted === null) return;
  if (wanted.last !== null && wanted.lastSeq >= wanted.last) {
    finish("done"); // every slot is behind us: only `done` was lost
    return;
  }
  start(wanted);
}

function onStarted(message) {
  const { plan, resumed } = pendingStarts.shift() ?? {
    plan: newPlan(message.interval, message.count, false),
    resumed: false,
  };
  const first = message.first ?? 1; // a server older than anchors starts at slot 1
  if (!resumed) {
    stats = new ScheduleStats();
    queued = [];
    tickList.replaceChildren();
    chart.reset(message.interval * 1000);
    plan.anchor = message.anchor ?? null;
    plan.last = message.count === null ? null : first + message.count - 1;
    plan.lastSeq = first - 1;
  }
  // The server starts a resumed grid at the next slot due: those before it
  // passed while we were away.
  const lost = first - 1 - plan.lastSeq;
  if (lost > 0) {
    stats.skipped += lost;
    enqueue({ skippedFrom: plan.lastSeq + 1, skipped: lost, why: "lost while reconnecting" });
    plan.lastSeq = first - 1;
  }
  const intervalMs = message.interval * 1000;
  current = {
    id: message.id,
    plan,
    // Slot first − 1 was due when the server accepted the start, before `started` arrived.
    fit: new LatenessFit(intervalMs, performance.now() - (first - 1) * intervalMs),
    lastArrival: null,
    skippedHere: 0,
    lostBefore: Math.max(0, lost),
  };
  const every = `every ${message.interval} s`;
  const total = plan.count === null ? "unlimited" : `${plan.count} ticks`;
  const aligned = plan.align ? ", aligned to the clock" : "";
  setScheduleState(`#${message.id}: ${every}, ${total}${aligned}${resumed ? `, resumed at slot ${first}` : ""}`);
  summaryDirty = true;
}

function onTick(message) {
  const now = performance.now();
  const plan = current.plan;
  const deviation = current.fit.lateness(message.seq, now);
  stats.record(deviation);
  const gap = current.lastArrival === null ? null : now - current.lastArrival;
  current.lastArrival = now;
  const item = { seq: message.seq, at: new Date(), serverTime: message.time, deviation };
  if (message.seq <= plan.lastSeq) {
    // A grid's seq only goes up: a repeat or a step back is a fault, shown as one.
    stats.outOfOrder += 1;
    chart.add(gap, 0);
    enqueue({ ...item, outOfOrder: true });
  } else {
    const skipped = message.seq - plan.lastSeq - 1;
    if (skipped > 0) {
      stats.skipped += skipped;
      current.skippedHere += skipped;
      enqueue({ skippedFrom: plan.lastSeq + 1, skipped, why: "the connection was too slow" });
    }
    chart.add(gap, skipped + current.lostBefore);
    current.lostBefore = 0;
    plan.lastSeq = message.seq;
    enqueue(item);
  }
  summaryDirty = true;
}

function onDone(message) {
  const plan = current.plan;
  const trailing = message.skipped - current.skippedHere;
  if (trailing > 0) {
    stats.skipped += trailing;
    enqueue({ skippedFrom: plan.lastSeq + 1, skipped: trailing, why: "the connection was too slow" });
    plan.lastSeq += trailing;
  }
  if (plan === wanted) wanted = null;
  current = null;
  setScheduleState(`done: ${stats.received} received, ${stats.skipped} skipped`);
  summaryDirty = true;
}

function onError(message) {
  const pending = pendingStarts.shift(); // every error answers a start
  if (pending !== undefined && pending.resumed && message.code === "schedule_over") {
    // The final slot passed while we were away: the schedule is over, not refused.
    const plan = pending.plan;
    if (plan !== wanted) return; // stopped or replaced meanwhile
    const lost = plan.last - plan.lastSeq;
    if (lost > 0) {
      stats.skipped += lost;
      enqueue({ skippedFrom: plan.lastSeq + 1, skipped: lost, why: "lost while reconnecting" });
      plan.lastSeq = plan.last;
    }
    finish("ended while disconnected");
    return;
  }
  showProblems({ other: message.message });
  if (pending !== undefined && pending.plan === wanted) {
    // Refused: whatever the server was running runs on.
    wanted = current === null ? null : current.plan;
    if (pending.resumed) setScheduleState("not resumed");
  }
}

function finish(how) {
  wanted = null;
  current = null;
  setScheduleState(`${how}: ${stats.received} received, ${stats.skipped} skipped`);
  summaryDirty = true;
}

function setScheduleState(text) {
  scheduleState.textContent = `(${text})`;
}

function enqueue(item) {
  queued.push(item);
  if (queued.length > MAX_TICKS_SHOWN) queued.splice(0, queued.length - MAX_TICKS_SHOWN);
}

function renderItem(item) {
  const li = document.createElement("li");
  if (item.skipped !== undefined) {
    li.className = "skipped";
    const last = item.skippedFrom + item.skipped - 1;
    const slots = item.skipped === 1 ? `slot ${item.skippedFrom}` : `slots ${item.skippedFrom}–${last}`;
    li.textContent = `skipped ${slots} (${item.why})`;
  } else {
    if (item.outOfOrder) li.className = "out-of-order";
    else if (Math.abs(item.deviation) > 50) li.className = "late";
    const server = Number.isFinite(item.serverTime) ? formatClock(new Date(item.serverTime * 1000)) : "–";
    li.append(`#${item.seq} · ${formatClock(item.at)} · server ${server} · `);
    const deviation = document.createElement("span");
    deviation.className = "deviation";
    deviation.textContent = formatMs(item.deviation);
    li.append(deviation);
    if (item.outOfOrder) li.append(" · out of order");
  }
  return li;
}

function render(time) {
  if (queued.length) {
    const fragment = document.createDocumentFragment();
    for (let i = queued.length - 1; i >= 0; i -= 1) fragment.append(renderItem(queued[i]));
    queued = [];
    tickList.prepend(fragment);
    while (tickList.childElementCount > MAX_TICKS_SHOWN) tickList.lastElementChild.remove();
  }
  // The p95 sorts up to 10,000 numbers: four times a second is plenty.
  if (summaryDirty && time - lastSummary > 250) {
    $("received").textContent = String(stats.received);
    $("skipped").textContent = String(stats.skipped);
    $("mean").textContent = formatMs(stats.mean);
    $("p95").textContent = formatMs(stats.p95);
    $("out-of-order").textContent = String(stats.outOfOrder);
    summaryDirty = false;
    lastSummary = time;
  }
  chart.draw();
  requestAnimationFrame(render);
}

function validate() {
  const problems = {};
  if (limits === null) {
    problems.other = "Not connected yet: try again when the status says “Connected to ticker”.";
    return { problems };
  }
  const interval = Number(intervalInput.value);
  const low = limits.min_interval;
  const high = limits.max_interval;
  const intervalOk = intervalInput.value.trim() !== "" && Number.isFinite(interval) && interval >= low && interval <= high;
  if (!intervalOk) problems.interval = `The interval must be a number of seconds between ${low} and ${high}.`;
  intervalInput.setAttribute("aria-invalid", String(!intervalOk));

  let count = null;
  let countOk = true;
  const countText = countInput.value.trim();
  // type=number reports text it cannot parse as "" with validity.badInput set.
  if (countText !== "" || countInput.validity.badInput) {
    count = Number(countText);
    countOk = countText !== "" && Number.isInteger(count) && count >= 1 && count <= limits.max_count;
    if (!countOk) problems.count = `The count must be a whole number from 1 to ${limits.max_count}, or empty for no limit.`;
  }
  countInput.setAttribute("aria-invalid", String(!countOk));
  return { problems, interval, count };
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const { problems, interval, count } = validate();
  showProblems(problems);
  if (Object.keys(problems).length) return;
  start(newPlan(interval, count, alignInput.checked));
});

$("stop").addEventListener("click", () => {
  showProblems();
  wanted = null;
  if (!connection.send({ type: "stop" })) {
    current = null;
    setScheduleState("stopped");
  }
});

connection.connect();
requestAnimationFrame(render);
