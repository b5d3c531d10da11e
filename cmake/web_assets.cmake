# Copies the live map into OUT (cmake -P, run by the `web` target): our own files from SRC/src,
# and from SRC/node_modules (installed by `npm ci` in web/, which scripts/run and scripts/test
# do) Leaflet's dist and the phoenix client's ES module, unchanged. fleetd serves OUT as
# FLEETD_WEB_DIR; `cmake --install` puts it in share/fleetd/web.
#   OUT/index.html, OUT/admin.html (the on-call view of the supervision tree, GET /admin)
#   OUT/assets/        our modules and CSS, leaflet.js, leaflet.css, phoenix.mjs
#   OUT/assets/images/ Leaflet's marker and layer images (leaflet.css refers to images/...)
cmake_minimum_required(VERSION 3.18)
foreach(var SRC OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "web_assets.cmake: ${var} is not set")
  endif()
endforeach()

set(nm ${SRC}/node_modules)
set(vendor ${nm}/leaflet/dist/leaflet.js ${nm}/leaflet/dist/leaflet.css ${nm}/phoenix/priv/static/phoenix.mjs)
foreach(f ${vendor})
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "${f} is missing: the live map needs its npm packages. "
                        "Run `npm ci` in ${SRC} (scripts/run and scripts/test do it when needed).")
  endif()
endforeach()

# Start from an empty directory so that a file removed from the sources is not served any more.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT}/assets/images)
file(COPY ${SRC}/src/index.html ${SRC}/src/admin.html DESTINATION ${OUT})
file(GLOB own ${SRC}/src/*.js ${SRC}/src/*.css ${SRC}/src/*.svg)
file(COPY ${own} ${vendor} DESTINATION ${OUT}/assets)
file(GLOB images ${nm}/leaflet/dist/images/*.png)
file(COPY ${images} DESTINATION ${OUT}/assets/images)
