using QubesFirewall.Engine.AdminApi;

namespace QubesFirewall.Engine.Backends;

/// <summary>
/// Picks the backend: an explicit root wins, then $env:QUBESFW_ROOT, then qubesd's socket
/// ($env:QUBESFW_QUBESD_SOCKET or /var/run/qubesd.sock: the live dom0 backend, <see cref="AdminApiBackend"/>);
/// otherwise a clear error saying both ways to proceed.
/// </summary>
public static class BackendSelector
{
    public const string RootVariable = "QUBESFW_ROOT";
    public const string SocketVariable = "QUBESFW_QUBESD_SOCKET";
    public const string DefaultSocket = "/var/run/qubesd.sock";

    public static IQubesBackend Open(string? root, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var limits = Trust.QubeAnswerLimits.FromEnvironment(environment);
        if (!string.IsNullOrEmpty(root)) return new OfflineRoot(root) { AnswerLimits = limits };
        var fromEnvironment = environment(RootVariable);
        if (!string.IsNullOrEmpty(fromEnvironment)) return new OfflineRoot(fromEnvironment) { AnswerLimits = limits };
        var socket = environment(SocketVariable);
        if (string.IsNullOrEmpty(socket)) socket = DefaultSocket;
        if (File.Exists(socket))
            return new AdminApiBackend(new QubesdClient(socket), new QvmRunCommandRunner(environment: environment))
            {
                // dom0's own files (the qrexec policy) are local; $env:QUBESFW_DOM0_ROOT points them elsewhere.
                Dom0Root = environment(Dom0Files.RootVariable) is { Length: > 0 } dom0Root ? dom0Root : "/",
                AnswerLimits = limits,
                DeploymentLockPath = AdminApiBackend.DefaultLockPath(environment),
            };
        throw new QubesFirewallException(ErrorIds.NoBackend, FailureKind.ResourceUnavailable,
            $"No Qubes root was given and there is no qubesd socket at {socket}. In dom0, run where qubesd runs (its socket is {DefaultSocket}; $env:{SocketVariable} names another). Anywhere else, pass -Root <directory> or set $env:{RootVariable} to a directory laid out like dom0's /var/lib/qubes; the module ships a sample in its examples/qubes-root folder (copy it first: the cmdlets write to it).", socket);
    }
}
