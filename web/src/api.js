// fleetd's HTTP API as the pages use it: bearer-token requests that return the JSON body or throw
// an ApiError carrying the contract's status and error code.

export class ApiError extends Error {
    constructor(status, code, message) {
        super(message);
        this.status = status;
        this.code = code;
    }
}

/** method path with the bearer token; the JSON body, or an ApiError (status 0: fleetd unreachable). */
export async function requestJson(method, path, token) {
    let res;
    try {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        res = await fetch(path, { method, headers, cache: 'no-store' });
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

export const getJson = (path, token) => requestJson('GET', path, token);

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
    /** The supervision tree (admin token). */
    tree: (token) => getJson('admin/tree', token),
    /** Restarts one child of the tree as a drill; resolves once it runs again (admin token). Child ids
     *  ("tracker:harbor-1") go into the path as they are: ':' is allowed there, and fleetd does not decode. */
    restart: (token, id) => {
        if (!/^[A-Za-z0-9._:-]{1,128}$/.test(id)) return Promise.reject(new ApiError(400, 'invalid_id', `${id} is not a child id`));
        return requestJson('POST', `admin/tree/${id}/restart`, token);
    },
};
