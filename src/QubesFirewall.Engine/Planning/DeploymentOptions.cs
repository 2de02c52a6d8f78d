using QubesFirewall.Engine.Backends;

namespace QubesFirewall.Engine.Planning;

/// <summary>How a plan that reaches into qubes is made (port forwards, inter-qube links, qubes.ConnectTCP bindings).</summary>
public sealed record DeploymentOptions
{
    public DateTimeOffset Now { get; init; } = DateTimeOffset.UtcNow;

    /// <summary>
    /// Live backend: the qubes the change reaches must run (their files are read and written inside them, their
    /// rules loaded now; a binding's client listens now only when it runs, and its rc.local changes only while the
    /// qube that keeps it runs). Offline nothing has to run: files are written directly and every run is recorded.
    /// </summary>
    public bool RequireRunning { get; init; }

    /// <summary>
    /// Delivery through the agent: how long to wait for each running qube's agent to confirm the new generation
    /// (its status read with bounded qvm-run reads); zero skips the poll (-NoWait).
    /// </summary>
    public TimeSpan AgentWait { get; init; } = DefaultAgentWait;

    /// <summary>How long a change waits for the agents unless told otherwise (-TimeoutSeconds).</summary>
    public static readonly TimeSpan DefaultAgentWait = TimeSpan.FromSeconds(5);

    /// <summary>These options, waiting <paramref name="wait"/> for the agents (zero: not asking them, -NoWait).</summary>
    public DeploymentOptions WaitingForAgents(TimeSpan wait) => this with { AgentWait = wait };

    public static DeploymentOptions For(IQubesBackend backend, DateTimeOffset now) =>
        new() { Now = now, RequireRunning = backend.RunsInQubes };

    /// <summary>For a plan that does not depend on the time (a binding): now.</summary>
    public static DeploymentOptions For(IQubesBackend backend) => For(backend, DateTimeOffset.UtcNow);
}
