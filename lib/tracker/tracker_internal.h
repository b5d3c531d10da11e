/* Shared by the tracker's own files. */
#ifndef FL_TRACKER_INTERNAL_H
#define FL_TRACKER_INTERNAL_H

#include "tracker.h"

/* A vehicle's latest fix; its id is the map key. Optional values are floats: partners send a few
 * significant digits, and the smaller struct keeps a tracked vehicle near 100 bytes. */
typedef struct {
    double lat, lng;
    int64_t recorded_us, received_us;
    float speed_kmh, heading_deg, accuracy_m;
    uint8_t has;
} vehicle_t;

void fl_json_string(fl_strbuf_t *b, const char *s);

/* A vehicle object (with "seq" when seq > 0: a position event). */
void fl_vehicle_json(fl_strbuf_t *b, const char *vehicle_id, const vehicle_t *v, uint64_t seq);
/* The fleet's status document, vehicles sorted by id; NULL when out of memory. */
fl_blob_t *fl_status_json(const char *fleet_id, fl_map_t *vehicles);

#endif
