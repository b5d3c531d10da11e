// The side list: one row per vehicle (sorted by id) with its speed and the time since its last
// fix, refreshed every second; a vehicle silent for longer than the stale threshold is greyed.

export function ageText(seconds) {
    if (seconds < 60) return `${Math.floor(seconds)} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
}

function speedText(v) {
    return Number.isFinite(v.speed_kmh) ? `${Math.round(v.speed_kmh)} km/h` : '–';
}

export class VehicleList {
    constructor(ul, { onSelect, onStale }) {
        this.ul = ul;
        this.onSelect = onSelect;
        this.onStale = onStale; // (id, stale) when a vehicle turns stale or fresh
        this.rows = new Map(); // vehicle_id -> {li, speed, age, fixAt, stale}
        this.staleAfterS = 60;
        this.selected = null;
    }

    upsert(v) {
        let row = this.rows.get(v.vehicle_id);
        if (!row) {
            row = this.makeRow(v.vehicle_id);
            this.rows.set(v.vehicle_id, row);
            const ids = [...this.rows.keys()].sort();
            const next = ids[ids.indexOf(v.vehicle_id) + 1];
            this.ul.insertBefore(row.li, next ? this.rows.get(next).li : null);
        }
        row.fixAt = Date.parse(v.recorded_at);
        row.speed.textContent = speedText(v);
        this.refresh(v.vehicle_id, row, Date.now());
    }

    makeRow(id) {
        const li = document.createElement('li');
        li.dataset.vehicleId = id;
        const button = document.createElement('button');
        button.type = 'button';
        const name = document.createElement('span');
        name.className = 'vid';
        name.textContent = id;
        const speed = document.createElement('span');
        speed.className = 'speed';
        const age = document.createElement('span');
        age.className = 'age';
        button.append(name, speed, age);
        button.addEventListener('click', () => this.onSelect(id));
        li.append(button);
        return { li, speed, age, fixAt: NaN, stale: null };
    }

    clear() {
        this.rows.clear();
        this.ul.replaceChildren();
        this.selected = null;
    }

    get size() {
        return this.rows.size;
    }

    setSelected(id) {
        this.selected = id;
        for (const [vid, row] of this.rows) row.li.classList.toggle('selected', vid === id);
    }

    setStaleAfter(seconds) {
        this.staleAfterS = seconds;
        this.tick();
    }

    /** Once a second: ages and staleness. */
    tick() {
        const now = Date.now();
        for (const [id, row] of this.rows) this.refresh(id, row, now);
    }

    refresh(id, row, now) {
        // a browser clock a little behind fleetd's would show negative ages
        const age = Number.isFinite(row.fixAt) ? Math.max(0, (now - row.fixAt) / 1000) : Infinity;
        row.age.textContent = Number.isFinite(age) ? ageText(age) : '';
        const stale = age > this.staleAfterS;
        if (stale !== row.stale) {
            row.stale = stale;
            row.li.classList.toggle('stale', stale);
            this.onStale(id, stale);
        }
    }
}
