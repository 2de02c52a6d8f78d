namespace QubesFirewall.Engine.Backends;

/// <summary>
/// Picks the backend: an explicit root wins, then $env:QUBESFW_ROOT, then qubesd's socket
/// (the live dom0 backend); otherwise a clear error saying how to point at a root.
/// </summary>
public static class BackendSelector
{
    public const string RootVariable = "QUBESFW_ROOT";
    public const string SocketVariable = "QUBESFW_QUBESD_SOCKET";
    public const string DefaultSocket = "/var/run/qubesd.sock";

    public static IQubesBackend Open(string? root, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        if (!string.IsNullOrEmpty(root)) return new OfflineRoot(root);
        var fromEnvironment = environment(RootVariable);
        if (!string.IsNullOrEmpty(fromEnvironment)) return new OfflineRoot(fromEnvironment);
        var socket = environment(SocketVariable);
        if (string.IsNullOrEmpty(socket)) socket = DefaultSocket;
        if (File.Exists(socket))
            throw new QubesFirewallException("LiveBackendNotAvailable", FailureKind.NotImplemented,
                $"qubesd's socket is at {socket}, but this version has no live dom0 backend yet. Use -Root <directory> or $env:{RootVariable} to work on an offline Qubes root.", socket);
        throw new QubesFirewallException("NoBackend", FailureKind.ResourceUnavailable,
            $"No Qubes root was given and there is no qubesd socket at {socket}. Pass -Root <directory> or set $env:{RootVariable} to a directory laid out like dom0's /var/lib/qubes; the module ships a sample in its examples/qubes-root folder (copy it first: the cmdlets write to it).", socket);
    }
}
