/* The C client baseline of the AMQP suite (benchmarks/amqp_c_contender.py), on
 * librabbitmq (Debian librabbitmq-dev). It does the durable work Herald does: a
 * durable topic exchange and queue, persistent messages published with publisher
 * confirms (a window at a time, confirms pipelined), consumed with manual acks and
 * a prefetch window.
 *
 *   amqp_c_client publish HOST PORT EXCHANGE QUEUE ROUTING_KEY
 *     reads lines "START STOP STAMP_NS" from stdin, publishes events START..STOP-1
 *     (body {"seq":N,"sent_ns":STAMP_NS,"pad":"x"*150}), waits for every confirm,
 *     then writes "ok" (or "nack" when the broker refused one).
 *   amqp_c_client consume HOST PORT EXCHANGE QUEUE ROUTING_KEY PREFETCH
 *     writes "ready", then "SEQ SENT_NS" per message before acking it; output is
 *     flushed whenever no message is waiting. Runs until killed.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>

static void die_on(amqp_rpc_reply_t reply, const char *doing) {
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
  fprintf(stderr, "amqp_c_client: %s failed (reply type %d, library error %d)\n", doing,
          reply.reply_type, reply.library_error);
  exit(2);
}

static amqp_connection_state_t open_channel(const char *host, int port) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t *socket = amqp_tcp_socket_new(conn);
  if (socket == NULL || amqp_socket_open(socket, host, port) != AMQP_STATUS_OK) {
    fprintf(stderr, "amqp_c_client: cannot connect to %s:%d\n", host, port);
    exit(2);
  }
  die_on(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
         "login");
  amqp_channel_open(conn, 1);
  die_on(amqp_get_rpc_reply(conn), "channel.open");
  return conn;
}

static void declare(amqp_connection_state_t conn, const char *exchange, const char *queue,
                    const char *key) {
  amqp_exchange_declare(conn, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0,
                        1, 0, 0, amqp_empty_table);
  die_on(amqp_get_rpc_reply(conn), "exchange.declare");
  amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
  die_on(amqp_get_rpc_reply(conn), "queue.declare");
  amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                  amqp_cstring_bytes(key), amqp_empty_table);
  die_on(amqp_get_rpc_reply(conn), "queue.bind");
}

/* Wait until every tag up to `last` is confirmed; 0 when all were acks. */
static int wait_confirms(amqp_connection_state_t conn, uint64_t last) {
  int refused = 0;
  uint64_t confirmed = 0;
  while (confirmed < last) {
    amqp_frame_t frame;
    if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) {
      fprintf(stderr, "amqp_c_client: connection lost waiting for confirms\n");
      exit(2);
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
      amqp_basic_ack_t *ack = frame.payload.method.decoded;
      confirmed = ack->delivery_tag > confirmed ? ack->delivery_tag : confirmed;
    } else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
      amqp_basic_nack_t *nack = frame.payload.method.decoded;
      confirmed = nack->delivery_tag > confirmed ? nack->delivery_tag : confirmed;
      refused = 1;
    }
    amqp_maybe_release_buffers(conn);
  }
  return refused;
}

static int publish(amqp_connection_state_t conn, const char *exchange, const char *key) {
  amqp_confirm_select(conn, 1);
  die_on(amqp_get_rpc_reply(conn), "confirm.select");
  char pad[151];
  memset(pad, 'x', 150);
  pad[150] = 0;
  amqp_basic_properties_t props;
  props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.content_type = amqp_cstring_bytes("application/json");
  props.delivery_mode = 2;
  printf("ready\n");
  fflush(stdout);
  uint64_t tag = 0;
  long long start, stop, stamp;
  char body[512];
  while (scanf("%lld %lld %lld", &start, &stop, &stamp) == 3) {
    for (long long seq = start; seq < stop; seq++) {
      int n = snprintf(body, sizeof body, "{\"seq\": %lld, \"sent_ns\": %lld, \"pad\": \"%s\"}",
                       seq, stamp, pad);
      amqp_bytes_t bytes = {(size_t)n, body};
      if (amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 0,
                             0, &props, bytes) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_c_client: publish failed\n");
        return 2;
      }
      tag++;
    }
    printf(wait_confirms(conn, tag) ? "nack\n" : "ok\n");
    fflush(stdout);
  }
  return 0;
}

static long long field(const char *body, size_t len, const char *name) {
  char text[512];
  size_t n = len < sizeof text - 1 ? len : sizeof text - 1;
  memcpy(text, body, n);
  text[n] = 0;
  const char *at = strstr(text, name);
  return at == NULL ? -1 : atoll(at + strlen(name));
}

static int consume(amqp_connection_state_t conn, const char *queue, int prefetch) {
  amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
  die_on(amqp_get_rpc_reply(conn), "basic.qos");
  amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  die_on(amqp_get_rpc_reply(conn), "basic.consume");
  printf("ready\n");
  fflush(stdout);
  int pending = 0;
  for (;;) {
    amqp_envelope_t envelope;
    struct timeval quick = {0, 1000};
    amqp_maybe_release_buffers(conn);
    amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, pending ? &quick : NULL, 0);
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_TIMEOUT) {
      fflush(stdout);
      pending = 0;
      continue;
    }
    die_on(reply, "consume");
    const char *body = envelope.message.body.bytes;
    size_t len = envelope.message.body.len;
    printf("%lld %lld\n", field(body, len, "\"seq\": "), field(body, len, "\"sent_ns\": "));
    pending = 1;
    if (amqp_basic_ack(conn, 1, envelope.delivery_tag, 0) != AMQP_STATUS_OK) {
      fprintf(stderr, "amqp_c_client: ack failed\n");
      return 2;
    }
    amqp_destroy_envelope(&envelope);
  }
}

int main(int argc, char **argv) {
  if (argc < 7 || (strcmp(argv[1], "consume") == 0 && argc < 8)) {
    fprintf(stderr, "usage: %s publish|consume HOST PORT EXCHANGE QUEUE KEY [PREFETCH]\n",
            argv[0]);
    return 64;
  }
  prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the harness process */
  amqp_connection_state_t conn = open_channel(argv[2], atoi(argv[3]));
  declare(conn, argv[4], argv[5], argv[6]);
  if (strcmp(argv[1], "publish") == 0) return publish(conn, argv[4], argv[6]);
  return consume(conn, argv[5], atoi(argv[7]));
}
