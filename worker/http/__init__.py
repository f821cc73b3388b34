"""What both HTTP ports share: middleware, authentication, JSON errors, request parsing."""
