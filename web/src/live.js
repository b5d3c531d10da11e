// One fleet's live feed over fleetd's Phoenix Channels endpoint (CONTRACT.md "Live"), with the
// official phoenix client: join `fleet:{id}`, a snapshot or a replay in the join reply, `position`
// events, Presence. The client rejoins by itself after a drop; the join params are a function, so
// each rejoin sends the last seq seen and fleetd replays exactly what was missed (or sends a fresh
// snapshot when the gap is gone from its buffer).
import { Presence, Socket } from './phoenix.mjs';

/** How long "resynced" shows after a rejoin before the state reads "live" again. */
const RESYNCED_MS = 8000;

export class LiveFleet {
    /**
     * handlers: onState(state, detail) with state connecting | live | reconnecting | resynced | refused;
     * onSnapshot(vehicles) replaces every vehicle; onPosition(vehicle) moves one;
     * onPresence([{name, count}]); onRefused(reason) when fleetd refuses the join for good.
     */
    constructor(token, fleetId, handlers) {
        this.token = token;
        this.fleetId = fleetId;
        this.h = handlers;
        this.lastSeq = null;
        this.joins = 0;
        this.state = null;
        this.resyncTimer = null;
        this.closed = false;
    }

    start() {
        // relative to the page, so that a proxy serving fleetd under a path prefix works too
        const endpoint = new URL('socket', document.baseURI).pathname;
        this.socket = new Socket(endpoint, { params: { token: this.token } });
        // the client retries by itself (with backoff) after an error or a close
        this.socket.onError(() => this.setState('reconnecting'));
        this.socket.onClose(() => this.setState('reconnecting'));

        this.channel = this.socket.channel(`fleet:${this.fleetId}`, () =>
            this.lastSeq === null ? {} : { last_seq: this.lastSeq },
        );
        this.channel.on('position', (p) => this.position(p));
        this.channel.onError(() => this.setState('reconnecting'));

        this.presence = new Presence(this.channel);
        this.presence.onSync(() =>
            this.h.onPresence(this.presence.list((name, { metas }) => ({ name, count: metas.length }))),
        );

        this.channel
            .join()
            .receive('ok', (reply) => this.joined(reply))
            .receive('error', (reply) => this.refused(reply))
            .receive('timeout', () => this.setState('reconnecting'));
        this.setState('connecting');
        this.socket.connect();
    }

    stop() {
        this.closed = true;
        clearTimeout(this.resyncTimer);
        if (this.channel) this.channel.leave();
        if (this.socket) this.socket.disconnect();
    }

    joined(reply) {
        if (this.closed) return;
        const rejoin = this.joins++ > 0;
        let detail = '';
        if (reply && Array.isArray(reply.vehicles)) {
            this.lastSeq = typeof reply.seq === 'number' ? reply.seq : null;
            this.h.onSnapshot(reply.vehicles);
            detail = 'fresh snapshot';
        } else if (reply && typeof reply.replayed === 'number') {
            // the K missed positions follow as events; each one advances lastSeq
            detail = `${reply.replayed} missed position${reply.replayed === 1 ? '' : 's'} replayed`;
        }
        if (!rejoin) {
            this.setState('live');
            return;
        }
        this.setState('resynced', detail);
        clearTimeout(this.resyncTimer);
        this.resyncTimer = setTimeout(() => {
            if (this.state === 'resynced') this.setState('live');
        }, RESYNCED_MS);
    }

    position(p) {
        if (this.closed || !p || typeof p.vehicle_id !== 'string') return;
        if (typeof p.seq === 'number') {
            // already shown: part of the snapshot, or a duplicate around a rejoin
            if (this.lastSeq !== null && p.seq <= this.lastSeq) return;
            this.lastSeq = p.seq;
        }
        this.h.onPosition(p);
    }

    refused(reply) {
        const reason = (reply && reply.reason) || 'refused';
        if (reason !== 'unauthorized' && reason !== 'not_found') {
            // anything else may pass: the client's rejoin timer tries again
            this.setState('reconnecting', reason);
            return;
        }
        this.stop();
        this.setState('refused', reason);
        this.h.onRefused(reason);
    }

    setState(state, detail = '') {
        if (this.closed && state !== 'refused') return;
        this.state = state;
        this.h.onState(state, detail);
    }
}
