#include "shim.h"

int ukcm_errno(void) { return rte_errno; }

unsigned ukcm_lcore_id(void) { return rte_lcore_id(); }

uint16_t ukcm_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t ukcm_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *ukcm_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int ukcm_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void ukcm_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void ukcm_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }

void *ukcm_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

void ukcm_mbuf_view(const struct rte_mbuf *m, struct ukcm_mbuf_view *out) {
    out->buf = m->buf_addr;
    out->buf_len = m->buf_len;
    out->data_off = m->data_off;
    out->data_len = m->data_len;
    out->nb_segs = m->nb_segs;
    out->pkt_len = m->pkt_len;
}

int ukcm_mbuf_set_data(struct rte_mbuf *m, uint16_t off, uint16_t len) {
    if ((uint32_t)off + (uint32_t)len > m->buf_len || m->nb_segs != 1)
        return -1;
    m->data_off = off;
    m->data_len = len;
    m->pkt_len = len;
    return 0;
}

unsigned ukcm_mempool_avail(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }

unsigned ukcm_mempool_in_use(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }

uint16_t ukcm_pktmbuf_headroom(void) { return RTE_PKTMBUF_HEADROOM; }

int ukcm_link(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex) {
    struct rte_eth_link l;
    int rc = rte_eth_link_get_nowait(port, &l);
    if (rc != 0)
        return rc;
    *speed_mbps = l.link_speed;
    *up = l.link_status;
    *full_duplex = l.link_duplex;
    return 0;
}
