# ctest and `./kv fuzz` script: builds the libFuzzer targets with clang
# (ASan, UBSan, libFuzzer; -DKVSTORE_FUZZ=ON) in WORK_DIR, then, when TARGET
# is given, fuzzes it for SECONDS from a scratch corpus seeded with its seed
# corpus (libFuzzer adds what it finds to the first directory only; the
# sources stay untouched). Fails on any crash, sanitizer report, hang or
# failed oracle, naming the input that caused it.
#   cmake -DSOURCE_DIR=. -DWORK_DIR=build/fuzz -DCLANGXX=clang++ [-DTARGET=wal -DSECONDS=60]
#         -P cmake/fuzz_test.cmake
include(${CMAKE_CURRENT_LIST_DIR}/run_checked.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/fuzz_targets.cmake)

set(exes "")
foreach(entry IN LISTS KVSTORE_FUZZ_TARGETS)
  string(REPLACE "|" ";" fields "${entry}")
  list(GET fields 0 name)
  list(GET fields 1 exe)
  get_filename_component(exe_name ${exe} NAME)
  list(APPEND exes ${exe_name})
  if(DEFINED TARGET AND name STREQUAL TARGET)
    list(GET fields 2 corpus)
    list(GET fields 3 flags)
    separate_arguments(flags UNIX_COMMAND "${flags}")
    set(target_exe ${exe})
    set(target_exe_name ${exe_name})
  endif()
endforeach()
if(DEFINED TARGET AND NOT DEFINED target_exe)
  list(TRANSFORM KVSTORE_FUZZ_TARGETS REPLACE "\\|.*" "" OUTPUT_VARIABLE names)
  message(FATAL_ERROR "unknown fuzz target '${TARGET}' (one of: ${names})")
endif()

if(NOT EXISTS ${WORK_DIR}/build.ninja)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR} -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
      -DCMAKE_CXX_COMPILER=${CLANGXX} -DKVSTORE_FUZZ=ON -DKVSTORE_BUILD_TESTS=OFF
      -DKVSTORE_BUILD_BENCH=OFF)
endif()
if(DEFINED target_exe)
  set(exes ${target_exe_name})  # the ctest fixture built them all already
endif()
if(NOT DEFINED JOBS)
  set(JOBS 2)
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR} -j ${JOBS} --target ${exes})
if(NOT DEFINED target_exe)
  return()
endif()

set(scratch ${WORK_DIR}/corpus/${TARGET})
file(REMOVE_RECURSE ${scratch})
file(MAKE_DIRECTORY ${scratch} ${WORK_DIR}/artifacts)
execute_process(
  COMMAND ${WORK_DIR}/${target_exe} -max_total_time=${SECONDS} -timeout=10 -print_final_stats=1
          -artifact_prefix=${WORK_DIR}/artifacts/${TARGET}- ${flags} ${scratch} ${SOURCE_DIR}/${corpus}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  string(REGEX MATCH "Test unit written to [^\n]*" artifact "${err}")
  message(FATAL_ERROR "fuzz target ${TARGET} failed (${rc}). ${artifact}\n"
          "Reproduce: ${WORK_DIR}/${target_exe} FILE; then save FILE under ${corpus}/ as a regression input.\n"
          "${out}\n${err}")
endif()
string(REGEX MATCH "stat::number_of_executed_units: *[0-9]+" runs "${err}")
string(REGEX MATCHALL "cov: [0-9]+ ft: [0-9]+" covs "${err}")
list(POP_BACK covs cov)
message("${TARGET}: ${runs}, ${cov}")
