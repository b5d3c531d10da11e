-- 002_vehicle_latest: each vehicle's latest fix, the table a (re)starting tracker loads its fleet
-- from. The audit worker keeps it, never moving a vehicle back in time.
CREATE TABLE vehicle_latest (
    vehicle_id  text PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    fleet_id    text NOT NULL REFERENCES fleets (id) ON DELETE CASCADE,
    lat         double precision NOT NULL CONSTRAINT vehicle_latest_lat CHECK (lat BETWEEN -90 AND 90),
    lng         double precision NOT NULL CONSTRAINT vehicle_latest_lng CHECK (lng BETWEEN -180 AND 180),
    recorded_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    speed_kmh   double precision CONSTRAINT vehicle_latest_speed CHECK (speed_kmh BETWEEN 0 AND 1000),
    heading_deg double precision CONSTRAINT vehicle_latest_heading CHECK (heading_deg >= 0 AND heading_deg < 360),
    accuracy_m  double precision CONSTRAINT vehicle_latest_accuracy CHECK (accuracy_m BETWEEN 0 AND 100000)
);
-- A tracker's load: every vehicle of one fleet.
CREATE INDEX vehicle_latest_fleet ON vehicle_latest (fleet_id);
