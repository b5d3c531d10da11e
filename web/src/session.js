// Signing in, shared by the map and the admin page: the token comes from a form or from the URL
// fragment (#token=...&fleet=..., as `fleetd demo` prints it; the fragment never reaches a server)
// and is kept in this browser's local storage until the user signs out.
const TOKEN_KEY = 'fleetd.token';

export const session = {
    token: () => localStorage.getItem(TOKEN_KEY),
    keep: (token) => localStorage.setItem(TOKEN_KEY, token),
    forget: () => localStorage.removeItem(TOKEN_KEY),
};

/** #token=...&fleet=... -> {token, fleet}; the fragment is then removed from the address bar. */
export function takeFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    const found = { token: params.get('token'), fleet: params.get('fleet') };
    if (found.token || found.fleet) history.replaceState(null, '', location.pathname + location.search);
    return found;
}
