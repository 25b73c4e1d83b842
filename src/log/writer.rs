//! Stdout's one writer: every thread queues its lines, one thread writes them in batches, and
//! a full queue drops lines (counted, then reported) rather than make a request wait.
//!
//! Cloud Run reads stdout through a pipe. If its reader stalls, a `write` blocks; written on
//! the worker threads, as lines were, a stall there stalled every request. Here a worker only
//! copies its line into the queue under a lock held for that copy.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::lock;

/// The most bytes of lines waiting to be written; a line that would pass it is dropped and
/// counted. A request's line is about 350 bytes, so this is some 3,000 lines: what stdout may
/// fall behind by, for a moment, before lines are lost.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// How long the writer lets lines gather after the first before it writes them all with one
/// `write`. Under load a batch holds many requests' lines, so no request pays a system call
/// for its own; a line reaches stdout at most this late.
const LINGER: Duration = Duration::from_millis(10);

/// How long `flush` waits for a stalled stdout before the process exits anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A batch buffer that grew past this is given back to the allocator once written: a burst
/// must not keep its memory for the life of the process.
const KEEP_CAPACITY: usize = 64 * 1024;

struct Queue {
    state: Mutex<State>,
    /// Wakes the writer: the first line after a quiet spell, a flush, a queue half full.
    wake: Condvar,
    /// Wakes `flush` callers once a batch is written.
    written: Condvar,
}

struct State {
    pending: Vec<u8>,
    /// Lines accepted since the start, and of those, lines written (or failed to write).
    accepted: u64,
    done: u64,
    /// Lines dropped since the writer last reported them.
    dropped: u64,
    /// The writer waits for a first line: the next one must wake it.
    idle: bool,
    /// Write now, without lingering: a flush waits, or the queue is half full.
    hurry: bool,
    /// `flush` calls waiting, which the writer wakes after each batch.
    flushing: usize,
}

static QUEUE: Queue = Queue {
    state: Mutex::new(State {
        pending: Vec::new(),
        accepted: 0,
        done: 0,
        dropped: 0,
        idle: false,
        hurry: false,
        flushing: 0,
    }),
    wake: Condvar::new(),
    written: Condvar::new(),
};

/// Whether the writer thread runs; started with the first line.
static WRITER: OnceLock<bool> = OnceLock::new();

fn writer_runs() -> bool {
    *WRITER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(|| write_batches(&QUEUE));
        spawned.is_ok()
    })
}

/// Queues `line` (a whole line, newline included) for the writer; never blocks on stdout.
pub fn queue(line: &[u8]) {
    if !writer_runs() {
        // No thread could be started: write in place, as the only way left.
        let _ = std::io::stdout().lock().write_all(line);
        return;
    }
    let mut state = lock(&QUEUE.state);
    let before = state.pending.len();
    if before + line.len() > QUEUE_BYTES {
        state.dropped += 1;
        return;
    }
    state.pending.extend_from_slice(line);
    state.accepted += 1;
    // One wake-up per batch: the writer is told when a batch starts, and again only if the
    // queue fills halfway while it lingers.
    let half = QUEUE_BYTES / 2;
    let wake = if state.idle {
        state.idle = false;
        true
    } else if before < half && state.pending.len() >= half {
        state.hurry = true;
        true
    } else {
        false
    };
    drop(state);
    if wake {
        QUEUE.wake.notify_one();
    }
}

/// Waits until every line queued before the call is written, and any drop reported, or
/// `FLUSH_WAIT` has passed: stdout may be stalled for good.
pub fn flush() {
    if WRITER.get() != Some(&true) {
        return;
    }
    let deadline = Instant::now() + FLUSH_WAIT;
    let mut state = lock(&QUEUE.state);
    let target = state.accepted;
    state.flushing += 1;
    state.hurry = true;
    QUEUE.wake.notify_one();
    while state.done < target || state.dropped > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        state = wait(QUEUE.written.wait_timeout(state, left)).0;
    }
    state.flushing -= 1;
}

/// The writer thread: waits for a first line, lets more gather for `LINGER` (less when
/// hurried), then writes them all, and the count of any it had to drop, with one `write`.
fn write_batches(queue: &Queue) {
    let mut batch = Vec::new();
    let mut state = lock(&queue.state);
    loop {
        while state.pending.is_empty() && state.dropped == 0 {
            state.idle = true;
            state = wait(queue.wake.wait(state));
        }
        state.idle = false;
        if !state.hurry {
            state = wait(queue.wake.wait_timeout(state, LINGER)).0;
        }
        state.hurry = false;
        std::mem::swap(&mut state.pending, &mut batch);
        let (upto, dropped) = (state.accepted, std::mem::take(&mut state.dropped));
        drop(state);
        if dropped > 0 {
            let text = dropped_text(dropped);
            super::json::message(
                &mut batch,
                "WARNING",
                &text,
                Some(("dropped_lines", dropped)),
            );
            batch.push(b'\n');
        }
        // A closed or broken stdout loses the lines, as it would have lost them written in
        // place; the proxy carries on.
        let _ = std::io::stdout().lock().write_all(&batch);
        batch.clear();
        if batch.capacity() > KEEP_CAPACITY {
            batch.shrink_to(KEEP_CAPACITY);
        }
        state = lock(&queue.state);
        state.done = upto;
        if state.flushing > 0 {
            queue.written.notify_all();
        }
    }
}

fn dropped_text(dropped: u64) -> String {
    format!(
        "stdout did not keep up: {dropped} log line(s) were dropped while the queue ({} KiB) was full",
        QUEUE_BYTES / 1024
    )
}

/// What a condition variable's wait returns, whether or not another holder of the lock
/// panicked (see `crate::lock`).
fn wait<T>(result: std::sync::LockResult<T>) -> T {
    result.unwrap_or_else(|e| e.into_inner())
}
/// Encodes a line into this thread's buffer, which is reused (a line costs no allocation),
/// and hands it to the writer whole, so lines from concurrent requests never interleave.
pub(super) fn queue_line(encode: impl FnOnce(&mut Vec<u8>)) {
    thread_local! {
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let mut encode = Some(encode);
    let mut write = |line: &mut Vec<u8>| {
        line.clear();
        if let Some(encode) = encode.take() {
            encode(line);
        }
        line.push(b'\n');
        queue(line);
    };
    // Past the thread's end (a guard dropped by a thread-local's destructor), a buffer of
    // its own.
    let reused = LINE.try_with(|line| line.try_borrow_mut().map(|mut line| write(&mut line)));
    if !matches!(reused, Ok(Ok(()))) {
        write(&mut Vec::new());
    }
}
