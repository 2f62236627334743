/* Waiting for a reply in the event loop's place.
 *
 * A coroutine that awaits one command at a time spends, per command, one
 * trip through asyncio's Python loop: _run_once, the selector's select(),
 * the handle's bookkeeping. A blocking client spends none of that: it sleeps
 * in recv() until the reply comes. When the reader callback has just resumed
 * the waiting task (future.h) and that task's next command went out, the
 * loop would do nothing but sleep in epoll_wait() until the reply, unless
 * something else becomes due. So the callback sleeps there itself, on the
 * loop's own epoll descriptor, for no longer than the loop would (its next
 * timer), and only while the loop has nothing else to run: no ready
 * callback, not stopping, not in debug mode. If the only thing that wakes it
 * is this connection's reply, the reply is read and the next task resumed
 * right there; anything else (another socket, a thread's call_soon_threadsafe
 * or a signal through the loop's self-pipe, a due timer, EINTR) returns to
 * the loop, which finds the same events ready: asyncio's selector registers
 * level-triggered, and epoll_wait() consumes nothing.
 *
 * Only for loops whose iteration is asyncio's own: an exact EpollSelector,
 * and _run_once and time() not overridden (a loop that adds work to its
 * iteration must get every iteration). Elsewhere (uvloop, other selectors,
 * other platforms) rc_loopwait_open() says no and nothing changes.
 */
#ifndef RC_LOOPWAIT_H
#define RC_LOOPWAIT_H

#include <Python.h>

#include "state.h"

typedef struct rc_loopwait {
    int epfd;            /* the loop's epoll descriptor; -1: never wait here */
    PyObject *loop_dict; /* the loop's __dict__, where its queues live */
    PyObject *fd_to_key; /* its selector's map of registered descriptors */
} rc_loopwait;

/* At most this many descriptors are handed back by one wait. */
#define RC_LOOPWAIT_MAX_READY 8

/* Sets w up for loop: w->epfd stays -1 unless loop qualifies. Never fails
 * (a loop it cannot inspect simply does not qualify). */
void rc_loopwait_open(rc_loopwait *w, rc_state *st, PyObject *loop);

void rc_loopwait_close(rc_loopwait *w);

/* Sleeps, the GIL released, until something is ready in the loop or its
 * next timer is due. Returns how many descriptors were ready (1 to
 * RC_LOOPWAIT_MAX_READY, stored in fds), when every one of them is readable
 * and watched for reading only, by a reader whose callback `is_ours` says
 * the caller can run itself; 0: return to the loop (something else is
 * ready or due, the loop has work queued, or waiting here does not apply).
 * *readers gets the readers' callbacks, borrowed (valid until Python code
 * runs). Never raises. */
int rc_loopwait_ready(rc_loopwait *w, rc_state *st, int (*is_ours)(PyObject *callback),
                      PyObject **readers);

#endif
