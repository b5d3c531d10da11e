// fleetd's HTTP API as the page uses it: bearer-token GETs that return the JSON body or throw an
// ApiError carrying the contract's status and error code.

export class ApiError extends Error {
    constructor(status, code, message) {
        super(message);
        this.status = status;
        this.code = code;
    }
}

export async function getJson(path, token) {
    let res;
    try {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        res = await fetch(path, { headers, cache: 'no-store' });
    } catch (err) {
        throw new ApiError(0, 'network', `fleetd cannot be reached (${err.message})`);
    }
    let body = null;
    try {
        body = await res.json();
    } catch {
        /* an empty or non-JSON body: the status says enough */
    }
    if (res.ok) return body;
    const error = body && body.error ? body.error : {};
    throw new ApiError(res.status, error.code || 'http_error', error.message || `fleetd answered ${res.status}`);
}

const seg = encodeURIComponent;

export const api = {
    config: () => getJson('config.json'),
    fleets: (token) => getJson('api/v1/fleets', token),
    status: (token, fleet) => getJson(`api/v1/fleets/${seg(fleet)}/status`, token),
    /** The vehicle's fixes since `since` (a Date) as a GeoJSON Feature. */
    track: (token, fleet, vehicle, since) =>
        getJson(
            `api/v1/fleets/${seg(fleet)}/vehicles/${seg(vehicle)}/track?format=geojson&limit=10000&from=${seg(since.toISOString())}`,
            token,
        ),
};
