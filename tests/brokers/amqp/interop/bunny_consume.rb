# Consumes like Action Subscriber does: its own durable queue bound to the exchange.
#
#   ruby bunny_consume.rb AMQP_URL EXCHANGE QUEUE ROUTING_KEY COUNT
#
# Prints "READY" once bound, then one JSON line per message (body, headers and
# properties), acks it, and after COUNT messages deletes its queue and exits.
require "bunny"
require "json"

url, exchange_name, queue_name, routing_key, count = ARGV
count = Integer(count)
$stdout.sync = true

connection = Bunny.new(url, logger: Logger.new(nil))
connection.start
channel = connection.create_channel
exchange = channel.topic(exchange_name, durable: true)
queue = channel.queue(queue_name, durable: true)
queue.bind(exchange, routing_key: routing_key)
puts "READY"

received = 0
done = Queue.new
queue.subscribe(manual_ack: true) do |delivery, properties, body|
  headers = (properties.headers || {}).transform_values(&:to_s)
  puts JSON.generate(
    "routing_key" => delivery.routing_key,
    "body" => body,
    "headers" => headers,
    "content_type" => properties.content_type,
    "message_id" => properties.message_id,
    "type" => properties.type,
    "delivery_mode" => properties.delivery_mode,
    "timestamp" => properties.timestamp&.to_i,
  )
  channel.ack(delivery.delivery_tag)
  received += 1
  done << true if received == count
end

done.pop
queue.delete
connection.close
