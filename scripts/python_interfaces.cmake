# Included after project() by every CMake package that scripts/bootstrap builds on the ROS 2
# PyPI wheels (CMAKE_PROJECT_INCLUDE): vlm_ros_msgs, and vision_msgs and
# composition_interfaces from ../shared. The wheels hold rclpy but no rclcpp, so an interface
# package's C++ code (its headers and C++ type supports) could not be used there; only the C
# and Python code rclpy loads is generated, which halves those packages' build (152 -> 82
# CPU-seconds on 2 cores). With a sourced ROS 2 distro nothing is left out.
find_package(rosidl_default_generators QUIET)
if(rosidl_default_generators_FOUND)
  # rosidl_cmake's macro stays reachable as _rosidl_generate_interfaces (CMake keeps the
  # previous definition of a command under that name); its generators registered themselves
  # as extensions above, and a package's own find_package of them finds them included.
  macro(rosidl_generate_interfaces)
    list(FILTER AMENT_EXTENSIONS_rosidl_generate_idl_interfaces EXCLUDE REGEX "_cpp:")
    _rosidl_generate_interfaces(${ARGN})
    # The generated C files of one library all include the same runtime headers, which cost
    # more to compile than the files' own code: compiled as unity batches (eight files to a
    # translation unit), vlm_ros_msgs builds in 25 s instead of 40 s here. Each
    # __description.c defines file-level statics that other interfaces' files define too, so
    # those are compiled alone.
    get_directory_property(_vlm_targets BUILDSYSTEM_TARGETS)
    foreach(_vlm_target IN LISTS _vlm_targets)
      get_target_property(_vlm_type ${_vlm_target} TYPE)
      if(_vlm_type MATCHES "^(SHARED|MODULE|STATIC)_LIBRARY$")
        set_target_properties(${_vlm_target} PROPERTIES UNITY_BUILD ON)
        get_target_property(_vlm_sources ${_vlm_target} SOURCES)
        foreach(_vlm_source IN LISTS _vlm_sources)
          if(_vlm_source MATCHES "__description\\.c$")
            set_source_files_properties(${_vlm_source} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
          endif()
        endforeach()
      endif()
    endforeach()
  endmacro()
endif()
