// aps_auth_impl.cpp: the one file that compiles the implementation
// (APS_AUTH_HEADER_ONLY=0 set for the whole project)
#define APS_AUTH_IMPLEMENTATION
#include "aps_auth.hpp"
