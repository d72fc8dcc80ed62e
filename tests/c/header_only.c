/* tcpchat.h alone must compile as C11 and as C++11 with every warning an
 * error (tests/c/Makefile, target header-check). */
#include <tcpchat.h>

/* Use a few declarations so that the compiler looks at them. */
typedef tcpchat_status (*connect_fn)(const char *, int32_t, const tcpchat_config *, tcpchat_conn **);
extern connect_fn tcpchat_test_connect_fn;
connect_fn tcpchat_test_connect_fn = &tcpchat_conn_connect;
extern const int tcpchat_test_constants[];
const int tcpchat_test_constants[] = {TCPCHAT_ADDR_MAX, TCPCHAT_FRAMING_FRAME, TCPCHAT_ROLE_CLIENT,
                                      TCPCHAT_LOG_DEBUG, TCPCHAT_STATUS_INTERNAL,
                                      TCPCHAT_SESSION_END_PEER_CLOSED};
