/*
 * notify.c - tells masters that a trigger changed.
 *
 * Trigger changes are announced to every master in SKED_MASTERS with a
 * NOTIFY over a DEALER socket each; sends never block (a full queue drops
 * the notice, and masters reconcile from the store periodically anyway).
 */
#include "gateway/gateway.h"

#include "common/log.h"
#include "proto/proto.h"

#include <string.h>

void gateway_notify_job(gateway_t *gw, const char *trigger_id, const char *job_id,
                        const char *op)
{
    proto_msg_t msg = {.type = PROTO_NOTIFY, .seq = ++gw->seq};
    snprintf(msg.node_id, sizeof msg.node_id, "%s", gw->cfg->node_id);
    snprintf(msg.trigger_id, sizeof msg.trigger_id, "%s", trigger_id);
    snprintf(msg.op, sizeof msg.op, "%s", op);
    if (job_id)
        snprintf(msg.job_id, sizeof msg.job_id, "%s", job_id);
    for (int i = 0; i < gw->nnotify; i++) {
        zmsg_t *z = proto_encode(&msg, NULL);
        if (z && zmsg_send(&z, gw->notify[i]) < 0)
            log_warn("notify dropped", "trigger=%s op=%s master=%d", trigger_id, op, i);
        zmsg_destroy(&z);
    }
}

void gateway_notify(gateway_t *gw, const char *trigger_id, const char *op)
{
    gateway_notify_job(gw, trigger_id, NULL, op);
}

int gateway_connect_masters(gateway_t *gw)
{
    char list[sizeof gw->cfg->masters];
    snprintf(list, sizeof list, "%s", gw->cfg->masters);
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!*ep)
            continue;
        if (gw->nnotify == GATEWAY_MAX_MASTERS)
            return -1;
        zsock_t *s = zsock_new(ZMQ_DEALER);
        zsock_set_linger(s, 0);
        zsock_set_sndhwm(s, 10000);
        zsock_set_sndtimeo(s, 0); /* never block the HTTP loop */
        if (zsock_connect(s, "%s", ep) < 0) {
            log_error("cannot connect to master", "endpoint=%s", ep);
            zsock_destroy(&s);
            return -1;
        }
        gw->notify[gw->nnotify++] = s;
    }
    return 0;
}
