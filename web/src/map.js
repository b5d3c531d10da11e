// The Leaflet map: one marker per vehicle, an arrow turned to its heading (a dot when it sent
// none), greyed when stale; the selected vehicle's recent track as a line. Without tiles the map
// is a plain background and still places, pans and zooms the markers.
/* global L */

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
}

/** The marker's own DOM: built once, then changed in place as positions arrive. */
function markerElement(id) {
    const root = document.createElement('div');
    root.className = 'vmark';
    root.dataset.vehicleId = id;
    const svg = svgEl('svg', { viewBox: '-12 -12 24 24', width: '24', height: '24', 'aria-hidden': 'true' });
    // SVG transform attributes, not inline styles: the page's CSP allows no inline style
    const arrow = svgEl('path', { class: 'arrow', d: 'M0,-10 L7,8 L0,4 L-7,8 Z' });
    const dot = svgEl('circle', { class: 'dot', r: '5' });
    svg.append(arrow, dot);
    const label = document.createElement('span');
    label.className = 'vlabel';
    label.textContent = id;
    root.append(svg, label);
    return { root, arrow };
}

export class FleetMap {
    constructor(el, { tiles, attribution, onSelect }) {
        this.el = el;
        this.onSelect = onSelect;
        this.markers = new Map(); // vehicle_id -> {marker, root, arrow}
        this.track = null;
        this.map = L.map(el, { worldCopyJump: true, zoomSnap: 0.5 }).setView([20, 0], 2);
        if (tiles) {
            L.tileLayer(tiles, { attribution, maxZoom: 19, subdomains: 'abc' }).addTo(this.map);
        } else {
            // a plain grid that pans and zooms with the map, drawn here: nothing is fetched
            const Grid = L.GridLayer.extend({
                createTile() {
                    const tile = document.createElement('div');
                    tile.className = 'grid-tile';
                    return tile;
                },
            });
            new Grid({ tileSize: 128 }).addTo(this.map);
            el.classList.add('no-tiles');
            this.map.attributionControl.addAttribution('no tiles configured (FLEETD_MAP_TILES)');
        }
        L.control.scale({ imperial: false }).addTo(this.map);
        this.map.on('zoomend', () => this.updateLabels());
    }

    /** With many vehicles, ids show on hover and for the selected one only, until zoomed in close. */
    updateLabels() {
        this.el.classList.toggle('quiet-labels', this.markers.size > 12 && this.map.getZoom() < 16);
    }

    /** Places or moves a vehicle's marker. */
    upsert(v) {
        if (!Number.isFinite(v.lat) || !Number.isFinite(v.lng)) return;
        let m = this.markers.get(v.vehicle_id);
        if (!m) {
            const { root, arrow } = markerElement(v.vehicle_id);
            const icon = L.divIcon({ html: root, className: 'vmark-icon', iconSize: [24, 24], iconAnchor: [12, 12] });
            const marker = L.marker([v.lat, v.lng], { icon, title: v.vehicle_id, keyboard: true, riseOnHover: true });
            marker.on('click', () => this.onSelect(v.vehicle_id));
            marker.addTo(this.map);
            m = { marker, root, arrow };
            this.markers.set(v.vehicle_id, m);
            this.updateLabels();
        } else {
            m.marker.setLatLng([v.lat, v.lng]);
        }
        const heading = Number.isFinite(v.heading_deg) ? v.heading_deg : null;
        m.root.classList.toggle('has-heading', heading !== null);
        m.arrow.setAttribute('transform', heading === null ? '' : `rotate(${heading})`);
        m.root.dataset.lat = String(v.lat);
        m.root.dataset.lng = String(v.lng);
        if (this.track && this.track.vehicleId === v.vehicle_id) this.track.line.addLatLng([v.lat, v.lng]);
    }

    clear() {
        for (const { marker } of this.markers.values()) marker.remove();
        this.markers.clear();
        this.hideTrack();
        this.updateLabels();
    }

    setStale(id, stale) {
        const m = this.markers.get(id);
        if (m) m.root.classList.toggle('stale', stale);
    }

    setSelected(id) {
        for (const [vid, m] of this.markers) {
            m.root.classList.toggle('selected', vid === id);
            m.marker.setZIndexOffset(vid === id ? 1000 : 0);
        }
    }

    /** Zooms to every vehicle (one vehicle: a street-level view around it). */
    fit() {
        const points = [...this.markers.values()].map(({ marker }) => marker.getLatLng());
        if (points.length === 1) this.map.setView(points[0], 14);
        else if (points.length > 1) this.map.fitBounds(L.latLngBounds(points), { padding: [40, 40], maxZoom: 15 });
    }

    panTo(id) {
        const m = this.markers.get(id);
        if (m) this.map.panTo(m.marker.getLatLng());
    }

    /** Draws a GeoJSON Feature (LineString, Point or no geometry) as the vehicle's track. */
    showTrack(vehicleId, feature) {
        this.hideTrack();
        const coords = !feature.geometry
            ? []
            : feature.geometry.type === 'LineString'
              ? feature.geometry.coordinates
              : [feature.geometry.coordinates];
        const line = L.polyline(
            coords.map(([lng, lat]) => [lat, lng]),
            { className: 'track-line', interactive: false },
        ).addTo(this.map);
        this.track = { vehicleId, line };
        if (coords.length > 1) this.map.fitBounds(line.getBounds(), { padding: [40, 40], maxZoom: 16 });
        return coords.length;
    }

    hideTrack() {
        if (this.track) this.track.line.remove();
        this.track = null;
    }

    /** For tests and debugging: where Leaflet has a vehicle's marker, and where it is on screen. */
    describe(id) {
        const m = this.markers.get(id);
        if (!m) return null;
        const ll = m.marker.getLatLng();
        const p = this.map.latLngToContainerPoint(ll);
        const box = this.el.getBoundingClientRect();
        return { lat: ll.lat, lng: ll.lng, x: box.left + p.x, y: box.top + p.y };
    }
}
