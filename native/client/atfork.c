/* atfork.c — the fork child's reset of the client side.
 *
 * The child of fork() is a new rx process with nothing: no fault channels, no control thread,
 * no rx mappings (MADV_DONTFORK dropped them; the table keeps their addresses as stale entries),
 * no stores. Each module resets its own state in its *_atfork_child(); this file only calls them,
 * in the order below, from the pthread_atfork child handler, where only the forking thread exists
 * (so the resets are plain stores and re-initialised mutexes). Owns the registration (once).
 * rxvdso_loader.c registers its own handler when it first attaches.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "internal.h"

static void rx_atfork_child(void) {
    faultchan_atfork_child();
    control_atfork_child();
    maptab_atfork_child();
    storetab_atfork_child();
    trap_atfork_child();
    apply_atfork_child();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc;

static void register_atfork(void) { atfork_rc = -pthread_atfork(NULL, NULL, rx_atfork_child); }

int atfork_register(void) {
    pthread_once(&atfork_once, register_atfork);
    return atfork_rc;
}
